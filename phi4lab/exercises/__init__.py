"""Self-checking exercises: diagnostic checks, and the student-edition generator.

Each notebook has a module of checks here (`welcome` for 00_welcome.ipynb) whose
functions compare a learner's function with phi4lab's reference implementation.
"""

from phi4lab.exercises.checking import ExerciseFailure, check_function, diagnose, tolerance

__all__ = ["ExerciseFailure", "check_function", "diagnose", "tolerance"]

"""Instructor and CI tooling, not imported by any lab: grading and student copies (`grading`), the headless
lab runner (`labs`), the Colab install cell and badges (`colab`), and the export of lesson code from the
notebooks into `labhelpers.lessons` (`export`)."""

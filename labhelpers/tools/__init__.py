"""Instructor and CI tooling, not imported by any lab: grading and student copies (`grading`), a student-only
tree without solutions (`publish`), the headless lab runner (`labs`), the Colab install cell and badges (`colab`),
the export of lesson code from the notebooks into `labhelpers.lessons` (`export`), and setup.sh's choice of
torch build (`torch_build`)."""

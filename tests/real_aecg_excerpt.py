"""An excerpt of a real HL7 aECG file, for the aECG reader's real-file test.

Source: `subject1_0.xml` in the FDA's aecg-python examples (github.com/FDA/aecg-python,
src/aecg/data/ectd_example/...), the HL7 December 2003 ballot sample: a Mortara ELI250 resting
ECG, 500 Hz (GLIST_TS increment 0.002 s), every lead an SLIST_PQ with origin 0 uV and scale
2.5 uV. Its layout is what the test rebuilds: the rhythm `series` holds one `sequenceSet` and,
nested inside the same series under `derivation/derivedSeries`, the representative beat with a
sequence set of its own. The digits below are the file's, cut short (the rhythm lead I to its
first QRS, the derived aVL and aVF to their first 150 samples); the test checks them against
2.5 uV per digit by hand.
"""

RHYTHM_INCREMENT_S = "0.002"
SCALE_UV = "2.5"

RHYTHM_LEAD_I = """
-2 -2 -2 -2 -3 -4 -3 -5 -5 -4 -6 -9 -9 -8 -6 -4 -6 -10 -10
-10 -9 -9 -9 -7 -7 -7 -7 -6 -3 -3 -2 0 1 1 2 0 -2 -4 -5 -5 -3 -4
-5 -6 -6 -4 -3 -4 -5 -7 -7 -5 -6 -4 -2 -3 -1 -1 2 3 3 5 7 7 6 3
3 0 0 4 8 7 7 7 12 14 15 16 16 16 18 21 25 26 23 25 25 23 28 32
36 38 39 39 39 36 35 32 29 28 27 27 25 19 13 7 5 1 0 -3 -6 -8 -6
-4 -3 -6 -8 -10 -10 -10 -8 -6 -5 -3 -2 -2 -3 -4 -5 -5 -4 -6 -6
-9 -10 -12 -12 -13 -18 -22 -29 -33 -36 -43 -49 -56 -64 -70 -71
-70 -69 -62 -54 -43 -28 -15 -2 10 25 42 56 68 83 100 120 134 139
135 127 116 102 87 73 60 47 34 23 17 15 10 7 6 5 4 -1 1 2 2 1 -2
"""

DERIVED_AVL = """
-22 -21 -22 -21 -20 -20 -19 -18 -16 -15 -14 -13 -13
-11 -10 -8 -12 -9 -8 -7 -6 -6 -6 -5 -5 -6 -7 -5 -5 -5 -4
-5 -5 -5 -5 -5 -6 -6 -8 -5 -4 -3 -5 -5 -4 -4 -4 -3 -5 -5
-4 -5 -6 -6 -6 -6 -6 -7 -6 -5 -6 -7 -6 -6 -8 -6 -6 -4 -4
-4 -6 -5 -6 -8 -10 -9 -7 -6 -7 -7 -4 -5 -5 -8 -8 -6 -8
-6 -4 -7 -6 -3 -5 -6 -5 -4 -2 -1 -2 -2 -1 0 0 1 0 1 0 0
0 1 0 -3 -3 -2 -2 -2 -1 -1 -3 -4 -5 -5 -2 -2 -2 -1 -2 -1
2 3 2 0 0 0 -3 0 3 3 5 2 2 0 -1 1 5 4 1 1 2 -2 -4 -4 -2
"""

DERIVED_AVF = """
50 48 48 47 46 46 45 42 40 38 35 34 33 31 28 26 27
25 25 24 23 22 23 22 20 21 21 20 20 20 21 20 20 20 20 18
19 19 19 17 17 17 18 17 18 18 18 17 19 18 19 20 19 19 19
19 19 20 19 18 19 20 20 20 23 22 22 21 21 21 22 21 22 22
23 23 21 19 20 20 18 19 20 23 23 22 23 22 21 22 20 17 18
19 19 18 14 13 15 16 14 14 13 13 15 13 14 14 14 14 15 17
17 15 15 15 14 15 15 15 15 15 13 13 12 12 14 15 13 12 11
12 12 13 15 13 12 12 11 12 12 14 15 15 13 16 19 20 18 22
"""

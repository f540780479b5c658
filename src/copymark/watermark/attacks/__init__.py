"""Attacks on an ownership proof (the security study, Sec. 5-7), one module per kind.

``robustness``: perturbations a suspect's owner might apply to the triggers or the model's input
(the study's Gaussian noise). Evasion (steganalysis), spoofing (counterfeit triggers), false
claims and removal come next, beside it. Attacks return images, labels or models; scoring them
is the job of ``metrics`` and the verification code, never of an attack.
"""

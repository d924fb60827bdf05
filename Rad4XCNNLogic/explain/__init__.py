"""Explanation: Spearman correlation between deep and radiomic features with its statistics, the |rho| >= M
rule and its summaries, and the glossary of radiomic meanings."""

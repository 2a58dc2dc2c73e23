"""Analysis of sentisweep results: tables, plots, significance, one report.

    python -m analysis report results/quick --out reports/quick
    python -m analysis compare results/quick TRIAL_OR_VARIANT_A TRIAL_OR_VARIANT_B
"""

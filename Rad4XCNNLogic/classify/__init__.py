"""Classification: shallow classifiers on each feature set, validated on the internal test split and the
external cohorts, with bootstrap intervals and importances."""

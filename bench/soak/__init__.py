"""Memory over time: the churn of cold variants (`churn`) and the mixed-load soak (`run`)."""

"""The replicas part: three imgproxy replicas behind nginx, without and with Redis."""

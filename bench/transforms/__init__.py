"""The transforms part: imgproxy's image transforms against thumbor and the in-process limit."""

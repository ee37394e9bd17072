"""Studies for ``gva reproduce``: each states a prediction, measures it, and returns a report Section."""

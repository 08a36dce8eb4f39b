"""The field's experiment designs as NH configs, their execution on local workers or Ray, and per-target
specialisation of a pooled run."""

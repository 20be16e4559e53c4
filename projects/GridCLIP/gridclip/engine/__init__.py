"""Training glue: launcher, hooks and trainer."""
from .launch import launch

"""The KFP pipeline definitions (the DAG) and their compiler entry."""

"""CPU and memory of a deployment's services during a real run, and the comparison across deployments."""

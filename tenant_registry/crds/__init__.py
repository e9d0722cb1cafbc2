"""KubeRay v1.7.0 CRD schemas (v1), from ray-project/kuberay ray-operator/config/crd/bases
at commit feeaf72facab4881ba2b179248bb67315634e229; written by scripts/vendor_crds.py."""

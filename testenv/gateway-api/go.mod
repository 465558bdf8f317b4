// Wrapper module: pins the Gateway API bundle whose standard-channel CRDs (config/crd/standard) stand in
// for the ones AKS manages (`az aks update --enable-gateway-api`: v1.4.1 on Kubernetes 1.35, our control
// plane). Nothing is built from it; scripts/testenv-build copies the CRDs out of the go.sum-checked download.
module gridos-setup/testenv/gateway-api

go 1.26.0

require sigs.k8s.io/gateway-api v1.4.1

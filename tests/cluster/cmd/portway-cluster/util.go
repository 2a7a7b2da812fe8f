package main

import (
	"crypto/tls"
	"encoding/base64"
	"net/http"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// insecureLoopback is for the readiness probes only: the apiserver's certificate is made
// while it starts, so the probe cannot know its CA yet. Everything after uses the CA.
func insecureLoopback() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
}

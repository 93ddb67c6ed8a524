//go:build tools

// Pins versitygw for the assetfs test stack; `go build github.com/versity/versitygw/cmd/versitygw`
// builds it from the versions recorded in go.sum.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"

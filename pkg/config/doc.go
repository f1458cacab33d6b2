// Package config loads a service's configuration from SLUICE_ environment variables with go-envconfig
// and validates it, reporting every problem at once. It also holds Secret, a string that never prints.
package config

// Package deploy holds sluice's deployment files: the local stack scripts, the Prometheus and Grafana
// configuration, and the tests that keep docker-compose.yml consistent with them and with the services.
// The tests load the compose file with compose-go, the library Docker Compose uses, so they need no Docker.
package deploy

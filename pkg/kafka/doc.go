// Package kafka builds sluice's franz-go clients, with the process's logger (kslog) and client metrics
// (kprom) on the process's registry, and bootstraps the topics the pipeline uses through kadm.
package kafka

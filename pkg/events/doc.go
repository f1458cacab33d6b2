// Package events writes and reads the job events on the events topic: the facts the extractor and
// the loader report (task extracted, records loaded, …) and from which the planner derives every
// job's progress, again after a restart.
package events

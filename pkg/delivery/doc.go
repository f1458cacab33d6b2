// Package delivery is the one place where a stage's unit of work (an extractor task, a loader batch)
// is finished: what failed transiently is retried with backoff, what is bad is dead-lettered and
// acknowledged, then the job events are published, then the input is committed, always in that
// order. Errors carry a typed class that one function per stage decides.
package delivery

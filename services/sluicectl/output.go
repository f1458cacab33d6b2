package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// format is the -o flag: table (for people), json or yaml (for programs); anything else is a usage
// error.
type format string

func (f *format) String() string { return string(*f) }
func (f *format) Type() string   { return "table|json|yaml" }
func (f *format) Set(v string) error {
	switch v {
	case "table", "json", "yaml":
		*f = format(v)
		return nil
	}
	return fmt.Errorf("%q is not table, json or yaml", v)
}

// outputFlag adds -o to cmd.
func outputFlag(cmd *cobra.Command) *format {
	f := format("table")
	cmd.Flags().VarP(&f, "output", "o", "output format: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	return &f
}

// encode writes v as JSON or YAML; YAML has the JSON's field names and order.
func encode(w io.Writer, f format, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if f == "json" {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var node yaml.Node
	if err := yaml.Unmarshal(b, &node); err != nil {
		return err
	}
	blockStyle(&node)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&node); err != nil {
		return err
	}
	return enc.Close()
}

// blockStyle turns the flow style that JSON parses into YAML's block style; the encoder quotes what
// must be.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

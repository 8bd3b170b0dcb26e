package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/configfile"
)

func newApplyCommand(a *app) *cobra.Command {
	var (
		files     []string
		dryRun    bool
		prune     bool
		managedBy string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-f ...] [--prune] [--dry-run]",
		Short: "Make the config match YAML files",
		Long: `Create what is new and update what differs, from YAML (or JSON) files; with
--prune, also delete what the files no longer name. The whole set is checked
first and committed as one revision, or not at all. Applying the same files
again changes nothing.

A file holds documents separated by ---, each with kind and name (Server,
Namespace, Endpoint, RateLimitPolicy). A directory applies every *.yaml,
*.yml and *.json in it. Secrets written without a value keep the stored one,
so the output of mmctl export applies back as a no-op. A secret may also name
where mmctl reads it at apply time, so the file holds none:
{secret: true, fromEnv: GITHUB_TOKEN} or {secret: true, fromFile: /run/secrets/gh}
(a relative fromFile is relative to the file's directory).

Every resource applied is marked as managed by --managed-by ("apply"). With
--prune, the resources of the kinds in the files that carry the same mark and
that the files leave out are deleted; resources made with mmctl create, or
applied with another --managed-by, are never pruned. Nothing is deleted that
a resource left in place still uses.`,
		Example: `  mmctl apply -f metamcp.yaml
  mmctl apply -f metamcp.yaml --prune --dry-run
  mmctl export | sed 's/per_client/shared/' | mmctl apply -f -`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return usageErrorf("apply needs -f FILE, a directory, or - for stdin")
			}
			if strings.TrimSpace(managedBy) == "" {
				return usageErrorf("--managed-by is empty: name the source of these files (the default is apply)")
			}
			resources, err := a.readConfigFiles(files, true)
			if err != nil {
				return err
			}
			return a.applyRequest(ctx, &metamcpv1.ApplyRequest{Resources: resources, DryRun: dryRun, Prune: prune, ManagedBy: managedBy})
		}),
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "a YAML or JSON file, a directory of them, or - for stdin (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check and show the changes without committing them")
	cmd.Flags().BoolVar(&prune, "prune", false, "also delete resources of the files' kinds, managed by --managed-by, that the files leave out")
	cmd.Flags().StringVar(&managedBy, "managed-by", "apply", "the source these files are: marks what they create or update, and scopes --prune")
	return cmd
}

// apply sends one Apply call for resources and prints its outcome.
func (a *app) apply(ctx context.Context, resources []*metamcpv1.Resource, dryRun bool) error {
	return a.applyRequest(ctx, &metamcpv1.ApplyRequest{Resources: resources, DryRun: dryRun})
}

// applyRequest sends one Apply call and prints its outcome, kubectl style.
func (a *app) applyRequest(ctx context.Context, req *metamcpv1.ApplyRequest) error {
	c, err := a.admin()
	if err != nil {
		return err
	}
	resp, err := c.Apply(ctx, req)
	if err != nil {
		what := "apply"
		if req.GetDelete() {
			what = "delete"
		}
		return about("config", fmt.Errorf("%s: %w", what, err))
	}
	for _, w := range resp.GetWarnings() {
		a.warn(cliKinds(w))
	}
	switch a.output {
	case outputJSON:
		return writeJSON(a.stdout, resp)
	case outputYAML:
		return writeYAML(a.stdout, resp)
	}
	suffix := ""
	if resp.GetDryRun() || req.GetDryRun() {
		suffix = " (dry run)"
	}
	for _, ch := range resp.GetChanges() {
		fmt.Fprintln(a.stdout, changeLine(ch)+suffix)
	}
	_, err = fmt.Fprintf(a.stdout, "revision %d%s\n", resp.GetRevision(), suffix)
	return err
}

// changeLine is one Apply change: `server/github created`,
// `namespace/dev configured (fields: members)`, `endpoint/dev unchanged`.
func changeLine(ch *metamcpv1.Change) string {
	kindName := strings.ToLower(ch.GetKind())
	if k := kindByAPIKind(ch.GetKind()); k != nil {
		kindName = k.name
	}
	line := kindName + "/" + ch.GetName() + " "
	switch ch.GetAction() {
	case metamcpv1.ChangeAction_CHANGE_ACTION_CREATED:
		line += "created"
	case metamcpv1.ChangeAction_CHANGE_ACTION_UPDATED:
		line += "configured"
		if len(ch.GetFields()) > 0 {
			line += " (fields: " + strings.Join(ch.GetFields(), ", ") + ")"
		}
	case metamcpv1.ChangeAction_CHANGE_ACTION_UNCHANGED:
		line += "unchanged"
	case metamcpv1.ChangeAction_CHANGE_ACTION_DELETED:
		line += "deleted"
	default:
		line += strings.ToLower(strings.TrimPrefix(ch.GetAction().String(), "CHANGE_ACTION_"))
	}
	return line
}

// readConfigFiles reads every -f argument: files, directories (their *.yaml,
// *.yml and *.json, in name order) and - (stdin, once). With resolve, the
// values that name their source (fromEnv, fromFile) are read.
func (a *app) readConfigFiles(args []string, resolve bool) ([]*metamcpv1.Resource, error) {
	var all []*metamcpv1.Resource
	stdinRead := false
	for _, arg := range args {
		var paths []string
		if arg == "-" {
			if stdinRead {
				return nil, usageErrorf("-f - is given more than once: stdin can be read only once")
			}
			stdinRead = true
			paths = []string{"-"}
		} else {
			info, err := os.Stat(arg)
			if err != nil {
				return nil, runtimeError{fmt.Errorf("read %s: %w", arg, unwrapPathError(err))}
			}
			if info.IsDir() {
				entries, err := os.ReadDir(arg)
				if err != nil {
					return nil, runtimeError{fmt.Errorf("read directory %s: %w", arg, unwrapPathError(err))}
				}
				for _, e := range entries {
					switch strings.ToLower(filepath.Ext(e.Name())) {
					case ".yaml", ".yml", ".json":
						if !e.IsDir() {
							paths = append(paths, filepath.Join(arg, e.Name()))
						}
					}
				}
				sort.Strings(paths)
				if len(paths) == 0 {
					return nil, runtimeError{fmt.Errorf("directory %s holds no *.yaml, *.yml or *.json file", arg)}
				}
			} else {
				paths = []string{arg}
			}
		}
		for _, p := range paths {
			res, err := a.readConfigFile(p)
			if err != nil {
				return nil, err
			}
			if resolve {
				if err := resolveValues(res, configDir(p)); err != nil {
					return nil, runtimeError{fmt.Errorf("%s: %w", displayName(p), err)}
				}
			}
			all = append(all, res...)
		}
	}
	if len(all) == 0 {
		return nil, runtimeError{fmt.Errorf("no resources found in %s", strings.Join(args, ", "))}
	}
	return all, nil
}

// readConfigFile parses one file (or stdin for "-").
func (a *app) readConfigFile(path string) ([]*metamcpv1.Resource, error) {
	var (
		data []byte
		err  error
		name = path
	)
	if path == "-" {
		name = "stdin"
		data, err = io.ReadAll(a.stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, runtimeError{fmt.Errorf("read %s: %w", name, unwrapPathError(err))}
	}
	res, err := configfile.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, runtimeError{fmt.Errorf("%s: %w", name, err)}
	}
	return res, nil
}

// configDir is the directory relative fromFile paths of a config file are
// taken from: the file's own, or the working directory for stdin.
func configDir(path string) string {
	if path == "-" {
		return "."
	}
	return filepath.Dir(path)
}

// displayName names a config file in messages.
func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// unwrapPathError drops the path an *os.PathError repeats.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func newExportCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "export [-o yaml|json]",
		Short: "Print the whole config in a form apply accepts back",
		Long: `Print every server, namespace, endpoint and rate-limit policy as YAML (the
default) or JSON, in the form mmctl apply reads. Secret values are not
included: they appear as set secrets without a value, which apply leaves as
stored. API keys and tokens are not exported.`,
		Example: `  mmctl export > metamcp.yaml
  mmctl apply -f metamcp.yaml   # a no-op`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := c.Export(ctx, &metamcpv1.ExportRequest{})
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			redact(resp)
			if a.output == outputJSON {
				out, err := resourcesJSON(resp.GetResources())
				if err != nil {
					return fmt.Errorf("encode the export as JSON: %w", err)
				}
				_, err = a.stdout.Write(out)
				return err
			}
			var buf bytes.Buffer
			if err := configfile.Marshal(&buf, resp.GetResources()); err != nil {
				return fmt.Errorf("encode the export: %w", err)
			}
			fmt.Fprintf(a.stdout, "# MetaMCP config exported from %s at revision %d.\n", a.addr, resp.GetRevision())
			fmt.Fprintf(a.stdout, "# Secret values are not included: applying this file keeps the stored ones.\n")
			_, err = a.stdout.Write(buf.Bytes())
			return err
		}),
	}
}

// resourcesJSON is a JSON array of resources in config-file form (the
// documents configfile.Marshal writes, as JSON), which apply reads back.
func resourcesJSON(resources []*metamcpv1.Resource) ([]byte, error) {
	docs := make([]json.RawMessage, 0, len(resources))
	for _, r := range resources {
		var y bytes.Buffer
		if err := configfile.Marshal(&y, []*metamcpv1.Resource{r}); err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(y.Bytes())
		if err != nil {
			return nil, err
		}
		docs = append(docs, j)
	}
	raw, err := json.Marshal(docs)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

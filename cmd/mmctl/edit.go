package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/configfile"
)

func newEditCommand(a *app) *cobra.Command {
	editable := func(k *kind) bool { return k.config }
	return &cobra.Command{
		Use:   "edit KIND NAME",
		Short: "Change a resource in your editor; it is applied when you save",
		Long: `Open a server, namespace, endpoint or rate-limit policy as YAML in $VISUAL or
$EDITOR (vi when neither is set), and apply it when the editor exits. When the
change is refused, the file opens again with the error on top; close it
unchanged to give up. A file left unchanged changes nothing.

Secret values are not shown: {secret: true} keeps the stored value. To change
one, write {secret: true, value: ...} or {secret: true, fromEnv: VAR}.`,
		Example: `  mmctl edit server github
  EDITOR="code --wait" mmctl edit namespace dev`,
		Args:              kindArgs(2, 2, "mmctl edit KIND NAME"),
		ValidArgsFunction: a.completeKindAndName(editable),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.begin()
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if !k.config {
				return usageErrorf("cannot edit %s: edit works on %s", k.plural, kindList(editable))
			}
			return a.edit(cmd.Context(), k, args[1])
		},
	}
}

// editHeader opens the file mmctl edit shows.
const editHeader = `# Edit %s %q, then save and close the editor to apply it. A file left
# unchanged changes nothing. Secrets show as {secret: true}, which keeps the
# stored value; write {secret: true, value: ...} or {secret: true, fromEnv: VAR}
# to change one.
`

// edit runs the edit loop for one resource: read it, let the user change it,
// apply, and on a refusal reopen it with the error.
func (a *app) edit(parent context.Context, k *kind, name string) error {
	c, err := a.admin()
	if err != nil {
		return err
	}
	ctx, cancel := a.rpcContext(parent)
	m, err := k.get(ctx, c, name)
	cancel()
	if err != nil {
		return fmt.Errorf("get %s %q: %w", k.name, name, err)
	}
	redact(m)
	var orig bytes.Buffer
	if err := writeConfigYAML(&orig, []proto.Message{m}); err != nil {
		return err
	}
	f, err := os.CreateTemp("", "mmctl-edit-"+k.name+"-*.yaml")
	if err != nil {
		return fmt.Errorf("create a file to edit: %w", err)
	}
	path := f.Name()
	_ = f.Close()
	keep := false
	defer func() {
		if !keep {
			_ = os.Remove(path)
		}
	}()

	content := orig.Bytes()
	header := fmt.Sprintf(editHeader, k.name, name)
	for attempt := 0; ; attempt++ {
		if err := os.WriteFile(path, append([]byte(header), content...), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := a.runEditor(parent, path); err != nil {
			keep = attempt > 0
			return err
		}
		edited, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		edited = dropLeadingComments(edited)
		if bytes.Equal(bytes.TrimSpace(edited), bytes.TrimSpace(content)) {
			if attempt == 0 {
				fmt.Fprintln(a.stderr, "edit cancelled: no changes")
				return nil
			}
			keep = true
			return runtimeError{fmt.Errorf("edit cancelled: %s %q is unchanged; your edit is kept in %s", k.name, name, path)}
		}
		content = edited
		msg, err := a.applyEdit(parent, k, name, edited)
		if err == nil {
			return nil
		}
		if msg == "" {
			keep = true
			return fmt.Errorf("%w (your edit is kept in %s)", err, path)
		}
		fmt.Fprintf(a.stderr, "error: %s\nreopening the file to fix it\n", msg)
		header = fmt.Sprintf(editHeader, k.name, name) + "#\n# The change was refused:\n" + commentLines(msg) + "#\n"
	}
}

// applyEdit parses and applies the edited file. A refusal the user can fix
// in the file (it does not parse, or the control plane finds it invalid)
// comes back as msg, to show in the reopened file; other failures as err
// alone.
func (a *app) applyEdit(parent context.Context, k *kind, name string, data []byte) (msg string, err error) {
	res, err := configfile.Parse(bytes.NewReader(data))
	if err == nil {
		err = checkEdited(res, k, name)
	}
	if err == nil {
		err = resolveValues(res, ".")
	}
	if err != nil {
		return err.Error(), err
	}
	ctx, cancel := a.rpcContext(parent)
	defer cancel()
	err = a.applyRequest(ctx, &metamcpv1.ApplyRequest{Resources: res})
	if st, ok := grpcStatus(err); ok && (st.Code() == codes.InvalidArgument || st.Code() == codes.FailedPrecondition) {
		text, _ := a.explain(err)
		return text, err
	}
	return "", err
}

// checkEdited requires the file to hold the one resource being edited.
func checkEdited(res []*metamcpv1.Resource, k *kind, name string) error {
	if len(res) != 1 {
		return fmt.Errorf("the file must hold exactly one resource, %s %q; it holds %d", k.name, name, len(res))
	}
	gotKind, gotName := configfile.KindOf(res[0])
	if gotKind != k.apiKind || gotName != name {
		return fmt.Errorf("the file must hold %s %q, not %s %q: to rename or copy it, use mmctl apply -f", k.apiKind, name, gotKind, gotName)
	}
	return nil
}

// runEditor runs $VISUAL or $EDITOR (a command line, split like a shell
// does) on path and waits for it.
func (a *app) runEditor(ctx context.Context, path string) error {
	line := a.getenv("VISUAL")
	if line == "" {
		line = a.getenv("EDITOR")
	}
	if line == "" {
		line = "vi"
		if runtime.GOOS == "windows" {
			line = "notepad"
		}
	}
	words, err := splitCommandLine(line)
	if err != nil || len(words) == 0 {
		return usageErrorf("cannot run the editor %q: set EDITOR to a command, e.g. EDITOR=\"code --wait\"", line)
	}
	cmd := exec.CommandContext(ctx, words[0], append(words[1:], path)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return runtimeError{fmt.Errorf("the editor (%s) failed: %w; nothing was applied", line, err)}
		}
		return runtimeError{fmt.Errorf("cannot run the editor (%s): %w; set EDITOR or VISUAL", line, unwrapPathError(err))}
	}
	return nil
}

// dropLeadingComments removes the comment lines (and blank lines) before the
// first content line: the header mmctl edit writes.
func dropLeadingComments(data []byte) []byte {
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			break
		}
		data = rest
	}
	return data
}

// commentLines turns a message into YAML comment lines.
func commentLines(msg string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		b.WriteString("#   " + l + "\n")
	}
	return b.String()
}

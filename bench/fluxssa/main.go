// fluxssa: a small harness around Flux's apply engine (github.com/fluxcd/pkg/ssa),
// applying a directory of YAML the way kustomize-controller applies a
// Kustomization, so the benches can time it next to kubectl-gitops.
//
//	fluxssa sync -dir DIR -name NAME -namespace NS [-prune] [-concurrency 4]
//	fluxssa diff -dir DIR -name NAME -namespace NS
//
// sync: every object gets the owner labels kustomize.toolkit.fluxcd.io/name
// and /namespace; ssa.ResourceManager.ApplyAllStaged (field manager
// kustomize-controller, cluster-wide kinds first) dry-runs each object and
// applies only those that drifted. The inventory (what the last sync applied)
// lives in the ConfigMap NS/fluxssa-NAME, as kustomize-controller keeps it in
// the Kustomization's status: read once per run, written only when it
// changes. -prune deletes what the inventory holds and the directory no longer
// does (ResourceManager.DeleteAll, only objects still carrying the owner
// labels). It prints one line per object on stdout and, on stderr, the
// summary "fluxssa: C created, U configured, N unchanged, D deleted".
//
// diff: ResourceManager.Diff per object, as `flux diff kustomization` does
// (one object after the other), nothing written; prints each created or
// drifted object with a diff of live and merged objects, objects the
// inventory holds that the directory does not as deleted, and the summary on
// stderr. Exit status 1 when anything differs, 0 when nothing does.
//
// Errors: one line on stderr, exit status 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
)

// The owner kustomize-controller applies as.
var owner = ssa.Owner{Field: "kustomize-controller", Group: "kustomize.toolkit.fluxcd.io"}

const inventoryKey = "inventory"

type options struct {
	dir, name, namespace string
	prune                bool
	concurrency          int
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "sync" && os.Args[1] != "diff") {
		fail(errors.New("usage: fluxssa sync|diff -dir DIR -name NAME -namespace NS [-prune] [-concurrency N]"))
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet("fluxssa "+mode, flag.ExitOnError)
	var o options
	fs.StringVar(&o.dir, "dir", "", "directory of YAML files (not recursive)")
	fs.StringVar(&o.name, "name", "", "the Kustomization's name (owner label, inventory)")
	fs.StringVar(&o.namespace, "namespace", "", "the Kustomization's namespace")
	fs.BoolVar(&o.prune, "prune", false, "sync: delete objects the inventory holds and the directory does not")
	// kustomize-controller's --concurrent-ssa defaults to 4.
	fs.IntVar(&o.concurrency, "concurrency", 4, "concurrent server-side apply dry-runs")
	_ = fs.Parse(os.Args[2:])
	if o.dir == "" || o.name == "" || o.namespace == "" {
		fail(errors.New("-dir, -name and -namespace are required"))
	}
	ctx := context.Background()
	var (
		differs bool
		err     error
	)
	if mode == "sync" {
		err = sync(ctx, o)
	} else {
		differs, err = diff(ctx, o)
	}
	if err != nil {
		fail(err)
	}
	if differs {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "fluxssa: error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(2)
}

// manager builds a ResourceManager on a direct (uncached) client, as
// kustomize-controller does for each reconcile, with Flux's client rate
// limits (QPS 50, burst 300).
func manager(o options) (*ssa.ResourceManager, ctrl.Client, error) {
	cfg, err := config.GetConfig()
	if err != nil {
		return nil, nil, err
	}
	cfg.QPS, cfg.Burst = 50, 300
	c, err := ctrl.New(cfg, ctrl.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, nil, err
	}
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	rm := ssa.NewResourceManager(c, poller, owner)
	rm.SetConcurrency(o.concurrency)
	return rm, c, nil
}

// readDir reads every *.yaml / *.yml file of dir, in name order.
func readDir(dir string) ([]*unstructured.Unstructured, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var objects []*unstructured.Unstructured
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		objs, err := utils.ReadObjects(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		objects = append(objects, objs...)
	}
	return objects, nil
}

func load(o options) (*ssa.ResourceManager, ctrl.Client, []*unstructured.Unstructured, error) {
	objects, err := readDir(o.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	rm, c, err := manager(o)
	if err != nil {
		return nil, nil, nil, err
	}
	rm.SetOwnerLabels(objects, o.name, o.namespace)
	return rm, c, objects, nil
}

// applyOptions are kustomize-controller's: objects labelled
// reconcile: disabled are left alone, no forced recreation.
func applyOptions() ssa.ApplyOptions {
	opts := ssa.DefaultApplyOptions()
	opts.ExclusionSelector = map[string]string{owner.Group + "/reconcile": "disabled"}
	opts.IfNotPresentSelector = map[string]string{owner.Group + "/ssa": "IfNotPresent"}
	opts.WaitTimeout = time.Minute
	return opts
}

func sync(ctx context.Context, o options) error {
	rm, c, objects, err := load(o)
	if err != nil {
		return err
	}
	old, err := readInventory(ctx, c, o)
	if err != nil {
		return err
	}
	cs, err := rm.ApplyAllStaged(ctx, objects, applyOptions())
	if err != nil {
		return err
	}
	counts := map[ssa.Action]int{}
	for _, e := range cs.Entries {
		counts[e.Action]++
		fmt.Println(e.String())
	}
	current := inventoryOf(objects)
	deleted := 0
	if o.prune {
		stale, err := staleObjects(old, current)
		if err != nil {
			return err
		}
		if len(stale) > 0 {
			dcs, err := rm.DeleteAll(ctx, stale, ssa.DeleteOptions{
				PropagationPolicy: metav1.DeletePropagationBackground,
				Inclusions:        rm.GetOwnerLabels(o.name, o.namespace),
				Exclusions:        map[string]string{owner.Group + "/prune": "disabled"},
			})
			if err != nil {
				return err
			}
			for _, e := range dcs.Entries {
				fmt.Println(e.String())
				if e.Action == ssa.DeletedAction {
					deleted++
				}
			}
		}
	}
	if err := writeInventory(ctx, c, o, old, current); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "fluxssa: %d created, %d configured, %d unchanged, %d deleted\n",
		counts[ssa.CreatedAction], counts[ssa.ConfiguredAction], counts[ssa.UnchangedAction], deleted)
	return nil
}

func diff(ctx context.Context, o options) (bool, error) {
	rm, c, objects, err := load(o)
	if err != nil {
		return false, err
	}
	old, err := readInventory(ctx, c, o)
	if err != nil {
		return false, err
	}
	counts := map[ssa.Action]int{}
	for _, obj := range objects {
		entry, live, merged, err := rm.Diff(ctx, obj, ssa.DiffOptions{
			Exclusions: map[string]string{owner.Group + "/reconcile": "disabled"},
		})
		if err != nil {
			return false, err
		}
		counts[entry.Action]++
		switch entry.Action {
		case ssa.CreatedAction:
			fmt.Printf("► %s created\n", entry.Subject)
		case ssa.ConfiguredAction:
			fmt.Printf("► %s drifted\n%s", entry.Subject, cmp.Diff(live.Object, merged.Object))
		}
	}
	stale, err := staleObjects(old, inventoryOf(objects))
	if err != nil {
		return false, err
	}
	for _, s := range stale {
		fmt.Printf("► %s deleted\n", utils.FmtUnstructured(s))
	}
	fmt.Fprintf(os.Stderr, "fluxssa: %d created, %d configured, %d unchanged, %d deleted\n",
		counts[ssa.CreatedAction], counts[ssa.ConfiguredAction], counts[ssa.UnchangedAction], len(stale))
	return counts[ssa.CreatedAction]+counts[ssa.ConfiguredAction]+len(stale) > 0, nil
}

// --- the inventory ---------------------------------------------------------

// inventory: object ID (namespace_name_group_kind) -> API version, as
// kustomize-controller records its entries.
type inventory map[string]string

func inventoryOf(objects []*unstructured.Unstructured) inventory {
	inv := inventory{}
	for _, o := range objects {
		inv[object.UnstructuredToObjMetadata(o).String()] = o.GroupVersionKind().Version
	}
	return inv
}

func inventoryObject(o options) *unstructured.Unstructured {
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetNamespace(o.namespace)
	cm.SetName("fluxssa-" + o.name)
	return cm
}

// readInventory returns what the last sync applied (empty if none).
func readInventory(ctx context.Context, c ctrl.Client, o options) (inventory, error) {
	cm := inventoryObject(o)
	if err := c.Get(ctx, ctrl.ObjectKeyFromObject(cm), cm); err != nil {
		if apierrors.IsNotFound(err) {
			return inventory{}, nil
		}
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	inv := inventory{}
	for _, line := range strings.Split(data[inventoryKey], "\n") {
		if id, version, ok := strings.Cut(line, " "); ok {
			inv[id] = version
		}
	}
	return inv, nil
}

// writeInventory records current, only when it differs from old.
func writeInventory(ctx context.Context, c ctrl.Client, o options, old, current inventory) error {
	if maps.Equal(old, current) {
		return nil
	}
	lines := make([]string, 0, len(current))
	for id, version := range current {
		lines = append(lines, id+" "+version)
	}
	sort.Strings(lines)
	cm := inventoryObject(o)
	cm.Object["data"] = map[string]any{inventoryKey: strings.Join(lines, "\n")}
	if err := c.Patch(ctx, cm, ctrl.Apply, ctrl.FieldOwner(owner.Field), ctrl.ForceOwnership); err != nil {
		return fmt.Errorf("writing inventory: %w", err)
	}
	return nil
}

// staleObjects: what old holds and current does not, as objects to delete.
func staleObjects(old, current inventory) ([]*unstructured.Unstructured, error) {
	var stale []*unstructured.Unstructured
	for id, version := range old {
		if _, ok := current[id]; ok {
			continue
		}
		meta, err := object.ParseObjMetadata(id)
		if err != nil {
			return nil, fmt.Errorf("inventory entry %q: %w", id, err)
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(meta.GroupKind.WithVersion(version))
		u.SetNamespace(meta.Namespace)
		u.SetName(meta.Name)
		stale = append(stale, u)
	}
	return stale, nil
}

package console_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jetsaga/jetsaga/console"
)

// chromium is Debian's package's binary (.ci/run installs it).
const chromium = "/usr/bin/chromium"

// maxScreenshotBytes bounds each screenshot the README shows.
const maxScreenshotBytes = 150 << 10

// TestBrowser drives the console in a real, headless Chromium: the overview
// counts the sagas; filtering the list by status shows only the parked one;
// a compensated saga's timeline has its attempts, compensations and timer
// tick; a running saga's page follows it to its end without reloading; a
// parked saga is redriven through the confirmation page and its state
// changes. It takes the README's screenshots (into docs/img with
// JETSAGA_SCREENSHOTS=1). Without Chromium it skips, except under CI=true,
// where it fails.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no browser at %s (apt-get install chromium; .ci/run does): %v", chromium, err)
		}
		t.Skipf("no browser at %s (apt-get install chromium): %v", chromium, err)
	}
	t.Parallel()
	e := newEnv(t, console.Config{})
	e.standard()
	shots := t.TempDir()
	if os.Getenv("JETSAGA_SCREENSHOTS") == "1" {
		shots = filepath.Join("..", "docs", "img")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first call starts the browser and must not have a deadline.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.CaptureScreenshot()(ctx, tg)
			if err != nil {
				return err
			}
			if len(png) > maxScreenshotBytes {
				t.Errorf("screenshot %s is %d bytes, over %d", name, len(png), maxScreenshotBytes)
			}
			return os.WriteFile(filepath.Join(shots, name), png, 0o644)
		})
	}
	count := func(sel string) int {
		t.Helper()
		return value(t, ctx, "count "+sel, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(sel)+`).length`))
	}
	text := func(sel string) string {
		t.Helper()
		return value(t, ctx, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
	}

	// The overview.
	do("overview", chromedp.Navigate(e.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#counts`)),
		chromedp.WaitVisible(chromedp.CSS(`#parked tr[data-saga="park-1"]`)), shot("console-overview.png"))
	if parked, compensated := text(`a.card[data-status="parked"] .n`), text(`a.card[data-status="compensated"] .n`); parked != "1" || compensated != "2" {
		t.Fatalf("overview: %s parked, %s compensated; want 1 and 2", parked, compensated)
	}

	// Filter the list: parked sagas only.
	do("filter parked", chromedp.Navigate(e.url+"/sagas"), chromedp.WaitVisible(chromedp.CSS(`#filters`)),
		chromedp.SetValue(chromedp.CSS(`#f-status`), "parked"), chromedp.Click(chromedp.CSS(`#apply`)),
		chromedp.WaitVisible(chromedp.CSS(`#total[data-filter="parked"]`)))
	ids := value(t, ctx, "listed sagas", chromedp.Evaluate[[]string](`[...document.querySelectorAll("table.sagas tbody tr")].map(r => r.dataset.saga)`))
	if len(ids) != 1 || ids[0] != "park-1" {
		t.Fatalf("parked filter: sagas %v; want park-1 only", ids)
	}
	do("full list", chromedp.Navigate(e.url+"/sagas"), chromedp.WaitVisible(chromedp.CSS(`#total`)), shot("console-list.png"))

	// A compensated saga's timeline: its credit timed out (a tick), then
	// both steps were compensated.
	do("compensated saga", chromedp.Navigate(e.url+"/sagas/late-1"), chromedp.WaitVisible(chromedp.CSS(`svg.timeline`)))
	if n := count(`svg.timeline g.bar.undo.o-compensated`); n != 2 {
		t.Fatalf("compensated saga: %d compensation bars, want 2", n)
	}
	if count(`svg.timeline g.bar.do.o-succeeded[data-step="debit"]`) != 1 || count(`svg.timeline g.bar.do.open[data-step="credit"]`) != 1 ||
		count(`svg.timeline line.tick`) < 1 || count(`svg.plan g.step.st-compensated`) != 2 {
		t.Fatal("compensated saga: the timeline lacks the debit, the timed-out credit or the tick, or the plan's steps are not compensated")
	}
	narrow := value(t, ctx, "bars drawn", chromedp.Evaluate[int](`[...document.querySelectorAll("svg.timeline g.bar rect")].filter(r => r.getBoundingClientRect().width < 1).length`))
	if narrow != 0 {
		t.Fatalf("%d timeline bars are not drawn", narrow)
	}
	do("screenshot", shot("console-saga.png"))

	// A running saga's page follows it without reloading: its credit times
	// out after a second and it compensates.
	e.transfer("late-2")
	do("live saga", chromedp.Navigate(e.url+"/sagas/late-2"), chromedp.WaitVisible(chromedp.CSS(`#status`)),
		void(chromedp.Evaluate[bool](`window.jetsagaMarker = true`)),
		void(chromedp.Poll[bool](`document.querySelector("#status").textContent.startsWith("compensated")`, chromedp.WithPollingTimeout(30*time.Second))))
	if !value(t, ctx, "marker", chromedp.Evaluate[bool](`window.jetsagaMarker === true`)) {
		t.Fatal("the live page was reloaded instead of updated")
	}

	// Redrive the parked saga through the confirmation.
	do("redrive", chromedp.Navigate(e.url+"/sagas/park-1"), chromedp.WaitVisible(chromedp.CSS(`#act-redrive`)),
		chromedp.Click(chromedp.CSS(`#act-redrive`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.SetValue(chromedp.CSS(`#operator`), "alice"), chromedp.SendKeys(chromedp.CSS(`#note`), "post office reopened"),
		shot("console-confirm.png"),
		chromedp.Click(chromedp.CSS(`#confirm`)), chromedp.WaitVisible(chromedp.CSS(`#done`)),
		void(chromedp.Poll[bool](`document.querySelector("#status").textContent.startsWith("committed")`, chromedp.WithPollingTimeout(30*time.Second))))
	if status, by := text(`#status`), text(`#messages .by`); !strings.HasPrefix(status, "committed") || by != "by alice" {
		t.Fatalf("after the redrive: status %q, recorded %q", status, by)
	}
	cancel()
	cancelBrowser()
	cancelAlloc()
}

// value runs an action that returns a value, failing the test on error.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// void drops an action's value.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := a(ctx, tg)
		return err
	})
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

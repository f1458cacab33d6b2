package deploy

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestStatusPage opens the planner's status page in headless Chromium while a job runs: the page
// draws the job, its tasks, both groups' lag and the job's dead letter, and the loaded count it
// shows grows between two screenshots, which stay as artefacts. Without a token it asks for one.
func TestStatusPage(t *testing.T) {
	stacktest.Require(t)
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed: deploy/local/stack.sh install-tools installs it (make test runs that): %v", err)
	}
	const n = 60_000
	src := demosource.DefaultConfig()
	src.Records = n
	// Four tasks of 150 pages, each page a fifth of a second: the job runs for half a minute or more.
	src.PageLatency = 200 * time.Millisecond
	// The second task's second page always fails: the job has a dead letter from its first seconds.
	src.FailRanges = "15100-15199"
	p := newPipeline(t, src)
	env := p.with(map[string]string{
		"SLUICE_EXTRACTOR_RETRY_BASE": "10ms",
		"SLUICE_EXTRACTOR_RETRY_MAX":  "50ms",
		"SLUICE_PLANNER_LAG_INTERVAL": "1s",
		// The test ends while the job runs: the extractor need not wait for its tasks in flight.
		"SLUICE_EXTRACTOR_DRAIN_TIMEOUT": "1s",
	})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)
	groups := []string{env["SLUICE_EXTRACTOR_GROUP"], env["SLUICE_LOADER_GROUP"]}

	j := submit(t, planner, jobSpec("statuspage", p.srcURL, "statuspage", 4, 100, 1))
	// The first screenshot waits for something in every part of the page.
	waitFor(t, "records loaded, the dead letter and two lag measures of each group", time.Minute, func() bool {
		got := poll(t, planner, j.ID)
		return got.Records.Loaded > 0 && got.Tasks.DeadLettered == 1 && lettersOf(t, planner, j.ID) > 0 &&
			lagSamples(t, planner, groups) >= 2
	})

	dir := filepath.Join(stackState(t), "artefacts", "status-page")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	page := planner + "/#token=" + apiToken
	first := screenshot(t, browser, page, filepath.Join(dir, "1-running.png"))
	if first.attr(`main`, "data-api") != "ok" {
		t.Fatalf("the page shows an API error:\n%s", first.html)
	}
	loaded := first.jobLoaded(t, j.ID)
	tasks := first.rows("data-task-id")
	var dead int
	for _, r := range tasks {
		if r["data-state"] == "dead_lettered" {
			dead++
		}
	}
	if len(tasks) != 4 || dead != 1 || !strings.HasPrefix(tasks[0]["data-task-id"], j.ID) {
		t.Fatalf("the page lists tasks %v, want the job's 4 with 1 dead-lettered", tasks)
	}
	lines := map[string]bool{}
	for _, r := range first.tags("polyline", "data-group") {
		lines[r["data-group"]] = true
	}
	if !lines[groups[0]] || !lines[groups[1]] || len(lines) != 2 {
		t.Fatalf("the lag charts draw lines for %v, want %v", lines, groups)
	}
	letters := first.rows("data-letter")
	if len(letters) == 0 || letters[0]["data-letter-job"] != j.ID || letters[0]["data-stage"] != "extract" {
		t.Fatalf("the page lists dead letters %v, want the job's extract letter", letters)
	}

	workThePage(t, browser, planner, j.ID, filepath.Join(dir, "6-worked.png"))

	// The second screenshot waits until the API says more is loaded than the page showed.
	waitFor(t, "the job to load more records", time.Minute, func() bool { return poll(t, planner, j.ID).Records.Loaded > loaded })
	second := screenshot(t, browser, page, filepath.Join(dir, "2-later.png"))
	if later := second.jobLoaded(t, j.ID); later <= loaded {
		t.Fatalf("the page shows %d records loaded, then %d", loaded, later)
	}
	if bytes.Equal(first.png, second.png) {
		t.Fatal("the two screenshots are the same")
	}

	// The view lives in the address's fragment: a link filters the dead letters. The job has no
	// letter of the load stage, and its one of the extract stage.
	none := screenshot(t, browser, page+"&stage=load", filepath.Join(dir, "3-load-letters.png"))
	if n := len(none.rows("data-letter")); n != 0 || none.attr(`p id="letters-empty"`, "hidden") != "absent" {
		t.Fatalf("filtered to the load stage the page lists %d letters:\n%s", n, none.html)
	}
	some := screenshot(t, browser, page+"&stage=extract&job="+j.ID+"&tasks="+j.ID, filepath.Join(dir, "4-extract-letters.png"))
	if rows := some.rows("data-letter"); len(rows) != 1 || rows[0]["data-letter-job"] != j.ID || rows[0]["data-stage"] != "extract" {
		t.Fatalf("filtered to the job's extract letters the page lists %v", rows)
	}

	// Without a token the page says so and asks for one.
	asks := screenshot(t, browser, planner+"/", filepath.Join(dir, "5-no-token.png"))
	if asks.attr(`main`, "data-api") != "unauthorized" || asks.attr(`form id="token-form"`, "hidden") != "absent" ||
		len(asks.rows("data-job-id")) != 0 {
		t.Fatalf("without a token the page shows:\n%s", asks.html)
	}
	t.Logf("screenshots and their DOM: %s", dir)
}

// workThePage uses the page as someone would, in one tab driven over the DevTools protocol: the
// token typed into the form (and kept across a reload, out of the address), a click on the job to
// see its tasks, the stage filter chosen. The view follows into the address each time.
func workThePage(t *testing.T, browser, planner, job, path string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1366, 1000), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// until waits for a JavaScript predicate on the page.
	until := func(what, predicate string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			hash, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash`))
			t.Fatalf("%s: %v (the address's fragment is %q)", what, err, hash)
		}
	}
	row := fmt.Sprintf(`#jobs tr[data-job-id=%q]`, job)

	do("open the page without a token", chromedp.Navigate(planner+"/"), chromedp.WaitVisible(chromedp.CSS("#token-form")))
	do("type the token and send the form", chromedp.SendKeys(chromedp.CSS("#token"), apiToken), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	until("the jobs after the token is given", fmt.Sprintf(`document.querySelector(%q) !== null && document.getElementById("token-form").hidden`, row))
	do("reload the page", chromedp.Reload())
	until("the jobs after a reload, with the token kept in the tab", fmt.Sprintf(`document.querySelector(%q) !== null`, row))
	// A link with the token in its fragment: the page takes the token out of the address and keeps the view.
	do("open a link with a token", chromedp.Navigate(planner+"/#token=not-the-token&stage=any"))
	until("the token out of the address", `!location.hash.includes("token") && location.hash.includes("stage=any")`)
	do("open the page with the right token", chromedp.Navigate(planner+"/#token="+apiToken))
	until("the jobs", fmt.Sprintf(`document.querySelector(%q) !== null && !location.hash.includes("token")`, row))

	// Clicked from the page itself: the table is drawn again every 2 s, and a node found by the
	// DevTools protocol may be gone by the time it is clicked (seen on a loaded machine).
	do("click the job", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%q).click()`, row+" button")))
	// All 4 tasks while the job runs; of a job that ended meanwhile, its dead-lettered one.
	until("the job's tasks, named in the address", fmt.Sprintf(
		`document.getElementById("tasks-job").textContent === %[1]q && !document.getElementById("tasks-section").hidden &&
		 document.querySelectorAll("#tasks tr[data-task-id]").length === (document.getElementById("tasks-note").hidden ? 4 : 1) &&
		 new URLSearchParams(location.hash.slice(1)).get("tasks") === %[1]q`, job))

	// Choosing an option in a select is a change event on its form.
	choose := func(stage string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`{ const s = document.getElementById("dlq-stage"); s.value = %q; s.dispatchEvent(new Event("change", {bubbles: true})); }`, stage))
	}
	do("choose the load stage", choose("load"))
	until("no letter of the load stage", `new URLSearchParams(location.hash.slice(1)).get("stage") === "load" &&
		!document.getElementById("letters-empty").hidden && document.querySelectorAll("#letters tr[data-letter]").length === 0`)
	do("choose the extract stage", choose("extract"))
	until("the job's extract letter", fmt.Sprintf(`new URLSearchParams(location.hash.slice(1)).get("stage") === "extract" &&
		[...document.querySelectorAll("#letters tr[data-letter]")].some((r) => r.dataset.letterJob === %q && r.dataset.stage === "extract")`, job))

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot the worked page: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
}

// shot is what Chromium made of the page: its DOM after the scripts ran, and the screenshot.
type shot struct {
	html string
	png  []byte
}

// screenshot loads url in headless Chromium, lets the page's scripts run for four seconds of virtual
// time, and keeps the screenshot at path and the DOM next to it.
func screenshot(t *testing.T, browser, url, path string) shot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser,
		"--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1366,1000",
		"--virtual-time-budget=4000", "--user-data-dir="+t.TempDir(),
		// Only the planner on this machine: no name resolves, and the browser's own services stay off.
		"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--disable-background-networking",
		"--disable-component-update", "--no-first-run",
		"--screenshot="+path, "--dump-dom", url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(stderr.Bytes(), 3000))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v\n%s", err, tail(stderr.Bytes(), 3000))
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil || img.Bounds().Dx() != 1366 || img.Bounds().Dy() != 1000 {
		t.Fatalf("screenshot %s: %v, want a 1366×1000 PNG", path, err)
	}
	dom := strings.TrimSuffix(path, ".png") + ".html"
	if err := os.WriteFile(dom, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s, DOM %s", path, dom)
	return shot{html: stdout.String(), png: b}
}

var (
	tagRE  = regexp.MustCompile(`<[a-z]+\b[^>]*>`)
	attrRE = regexp.MustCompile(`([a-z][a-z0-9-]*)(?:="([^"]*)")?`)
)

// tags returns the attributes of every element named name that has the attribute has.
func (s shot) tags(name, has string) []map[string]string {
	var out []map[string]string
	for _, tag := range tagRE.FindAllString(s.html, -1) {
		if !strings.HasPrefix(tag, "<"+name+" ") || !strings.Contains(tag, " "+has+"=") {
			continue
		}
		attrs := map[string]string{}
		for _, m := range attrRE.FindAllStringSubmatch(tag[len(name)+1:len(tag)-1], -1) {
			attrs[m[1]] = m[2]
		}
		out = append(out, attrs)
	}
	return out
}

// rows returns the table rows that carry the data attribute has.
func (s shot) rows(has string) []map[string]string { return s.tags("tr", has) }

// attr returns an attribute of the first tag that starts with start, "" when it has it without a
// value, and "absent" when it does not have it.
func (s shot) attr(start, name string) string {
	for _, tag := range tagRE.FindAllString(s.html, -1) {
		if !strings.HasPrefix(tag, "<"+start) {
			continue
		}
		for _, m := range attrRE.FindAllStringSubmatch(tag[1:len(tag)-1], -1) {
			if m[1] == name {
				return m[2]
			}
		}
		return "absent"
	}
	return "absent"
}

// jobLoaded is the loaded count the page shows for job id.
func (s shot) jobLoaded(t *testing.T, id string) uint64 {
	t.Helper()
	for _, r := range s.rows("data-job-id") {
		if r["data-job-id"] != id {
			continue
		}
		n, err := strconv.ParseUint(r["data-loaded"], 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("the page shows job %s with %q records loaded: %v", id, r["data-loaded"], err)
		}
		return n
	}
	t.Fatalf("the page does not show job %s:\n%s", id, s.html)
	return 0
}

// lettersOf counts the job's dead letters as the planner's API lists them.
func lettersOf(t *testing.T, planner, id string) int {
	t.Helper()
	var answer struct{ Letters []struct{} }
	getJSON(t, planner, "/v1/deadletters?job="+id, &answer)
	return len(answer.Letters)
}

// lagSamples returns the fewest measures the planner's lag history holds of any of groups.
func lagSamples(t *testing.T, planner string, groups []string) int {
	t.Helper()
	var answer struct {
		Groups []struct {
			Group   string
			Samples []struct{}
		}
	}
	getJSON(t, planner, "/v1/lag/history", &answer)
	fewest := -1
	for _, want := range groups {
		got := 0
		for _, g := range answer.Groups {
			if g.Group == want {
				got = len(g.Samples)
			}
		}
		if fewest < 0 || got < fewest {
			fewest = got
		}
	}
	return fewest
}

// waitFor polls cond until it holds, or fails the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

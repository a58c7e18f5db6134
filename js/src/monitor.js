// TrainingMonitor: live loss curves and per-head induction-score curves; a stop button that
// interrupts the kernel (the trainer stops after the current step and the model is saved).
import "./lib/common.css";
import "./lib/panels.css";
import "./monitor.css";
import { mix, rgbCss, theme } from "./lib/color.js";
import { publishDrawn, sig } from "./lib/digest.js";
import { lineChart } from "./lib/chart.js";
import { cleanup, h, markDrawn, onThemeChange } from "./lib/dom.js";
import { needsKernel } from "./lib/offline.js";
import { onModelChanges } from "./lib/redraw.js";

function render({ model, el }) {
  const root = h("div", { cls: "cw-root cw-monitor" });
  el.append(root);
  let th = theme(root);
  const title = h("span", { cls: "cw-title" });
  const status = h("span", { cls: "cw-status", attrs: { role: "status" } });
  const stopBtn = h("button", { cls: "cw-btn cw-stop", text: "■ stop and save", attrs: { type: "button" } });
  const note = h("div", { cls: "cw-legend cw-stop-note" });
  const err = h("div", { cls: "cw-message cw-error" });
  const charts = h("div", { cls: "cw-main" });
  const bar = h("div", { cls: "cw-bar" }, [title, status, stopBtn]);
  root.append(bar, note, err, charts);
  needsKernel(model, [stopBtn], bar);

  stopBtn.addEventListener("click", () => {
    stopBtn.disabled = true;
    note.textContent = "stopping after the current step…";
    model.set("stop_requested", true);
    model.save_changes();
    // the kernel is busy running the training cell: interrupt it (the trainer turns the interrupt into
    // "stop after this step and save"); where no kernel connection is exposed, the message above is used
    const wm = model.widget_manager;
    const k = wm && (wm.kernel || (wm.context && wm.context.sessionContext && wm.context.sessionContext.session && wm.context.sessionContext.session.kernel));
    if (k && typeof k.interrupt === "function") {
      k.interrupt().then(() => { root.dataset.interrupted = "1"; }, (e) => { note.textContent = `could not interrupt the kernel: ${e}`; });
    } else {
      note.textContent = "stop requested (press the kernel's interrupt button ■ if training runs in this cell)";
    }
  });

  function draw() {
    th = theme(root);
    const st = model.get("status");
    title.textContent = `training monitor — ${model.get("title") || ""}`;
    status.textContent = `step ${model.get("step")} / ${model.get("total")} · ${st}`;
    status.dataset.status = st;
    root.dataset.status = st;
    stopBtn.disabled = !!model.offline || st !== "running";
    const saved = model.get("saved_path");
    if (saved) note.textContent = `stopped at step ${model.get("step")}; model saved to ${saved}`;
    err.textContent = model.get("error") || "";
    err.hidden = !model.get("error");
    const steps = model.get("steps") || [], evals = model.get("evals") || [];
    const c = th.rgb;
    const loss = [
      { label: "train (running mean)", pts: steps, color: rgbCss(c.accent) },
      { label: "validation", pts: evals.map((e) => [e.step, e.val_loss ?? NaN]), color: rgbCss(c.negative), dots: true },
      { label: "repeated half (in-context)", pts: evals.map((e) => [e.step, e.icl_repeated ?? NaN]), color: rgbCss(c.select), dots: true, dash: [4, 3] },
    ];
    const heads = [];
    const first = evals.find((e) => Array.isArray(e.induction));
    if (first) {
      const nL = first.induction.length, nH = first.induction[0].length;
      for (let l = 0; l < nL; l++) for (let j = 0; j < nH; j++) {
        const t = nL > 1 ? l / (nL - 1) : 1;
        heads.push({ label: nL * nH <= 16 ? `L${l}H${j}` : "", pts: evals.filter((e) => Array.isArray(e.induction)).map((e) => [e.step, e.induction[l][j]]),
          color: rgbCss(mix(mix(c.bg, c.fg2, 0.55), c.accent, t)), width: 1.2 });
      }
    }
    heads.push({ label: "max previous-token", pts: evals.map((e) => [e.step, e.max_previous_token ?? NaN]), color: rgbCss(c.negative), dash: [4, 3] });
    charts.replaceChildren(
      lineChart(th, loss, { title: "loss (nats)", kind: "loss" }),
      lineChart(th, heads, { title: "induction score of every head (phase change: a head jumps up)", kind: "heads", y0: 0, y1: 1 }),
    );
    // the last point of each curve drawn (lib/digest.js)
    const lastPt = (s) => { const p = s.pts.filter(([, y]) => Number.isFinite(y)).at(-1); return p ? [p[0], sig(p[1])] : null; };
    publishDrawn(root, { status: st, loss: loss.map(lastPt), heads: heads.map(lastPt) });
    markDrawn(root, { step: model.get("step"), nEvals: evals.length, nSteps: steps.length });
  }
  // one redraw after all keys of a kernel update arrived (lib/redraw.js)
  const changes = onModelChanges(model, ["steps", "evals", "status", "saved_path", "error", "step", "total", "title"],
    () => draw());
  draw();
  const offTheme = onThemeChange(draw);
  return cleanup(offTheme, changes);
}

export default { render };

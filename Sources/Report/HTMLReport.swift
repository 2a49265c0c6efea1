import Analysis
import Foundation
import Jobs
import ResultsStore

/// The self-contained HTML report of stored runs: inline SVG and CSS, nothing fetched (no
/// script, font, image or link), well-formed XML so that any XML parser reads it. Sections by
/// command: DLA runs side by side, then each patching run, then training and evaluation runs.
public enum HTMLReport {
    /// Heads listed in each DLA run's table.
    static let topHeads = 10

    public static func html(db: ResultsDatabase, runIDs: [Int64], options: FigureOptions = FigureOptions()) throws -> String {
        let runs = try Figures.records(db: db, ids: runIDs)
        let dla = try runs.filter { $0.command == StoreName.dlaCommand }.map { try DLAData(db: db, run: $0) }
        let patch = try runs.filter { $0.command == StoreName.patchCommand }.map { try PatchData(db: db, run: $0) }
        let trainingCommands = [StoreName.trainCommand, StoreName.removeLNCommand, StoreName.evalCommand]
        let training = try runs.filter { trainingCommands.contains($0.command) }.map { try TrainingData(db: db, run: $0) }
        let analysisCommands = [StoreName.sinksCommand, StoreName.normsCommand, StoreName.lensCommand, StoreName.neuronsCommand]
        let analyses = try runs.filter { analysisCommands.contains($0.command) }.map { try AnalysisData(db: db, run: $0) }
        let compares = try runs.filter { $0.command == StoreName.compareCommand }.map { try CompareData(db: db, run: $0) }
        let neurons = try runs.filter { $0.command == StoreName.neuronsCommand }.map { try NeuronData(db: db, run: $0) }
        let circuits = try runs.filter { $0.command == StoreName.circuitCommand }.map { try CircuitData(db: db, run: $0) }
        let known = [StoreName.dlaCommand, StoreName.patchCommand, StoreName.compareCommand, StoreName.circuitCommand]
            + trainingCommands + analysisCommands
        let other = runs.filter { !known.contains($0.command) }

        var page = Page()
        page.raw("<h1>lnlens report</h1>")
        page.paragraph("Run\(runs.count > 1 ? "s" : "") \(runs.map { "\($0.id!)" }.joined(separator: ", ")) of \(db.path). "
                       + "Every figure names its model, LayerNorm mode, prompt set and run; hover a cell or point for its value.",
                       note: true)
        page.table(runsTable(runs, dla: dla, patch: patch, training: training, analyses: analyses))
        if !dla.isEmpty { dlaSection(&page, dla) }
        if !patch.isEmpty { patchSection(&page, patch, options: options) }
        if !training.isEmpty { trainingSection(&page, training) }
        if !analyses.isEmpty { analysisSection(&page, analyses) }
        if !compares.isEmpty { compareSection(&page, compares) }
        if !neurons.isEmpty { neuronSection(&page, neurons) }
        if !circuits.isEmpty { circuitSection(&page, circuits) }
        for run in other {
            page.heading("Run \(run.id!): \(run.command)")
            page.paragraph("The report has no figures for \(run.command) runs yet.", note: true)
        }
        return page.document(title: "lnlens report: run\(runs.count > 1 ? "s" : "") " + runs.map { "\($0.id!)" }.joined(separator: ", "))
    }

    // MARK: Sections

    static func runsTable(_ runs: [RunRecord], dla: [DLAData], patch: [PatchData], training: [TrainingData],
                          analyses: [AnalysisData] = []) -> Table {
        var labels: [Int64: RunLabel] = [:]
        for d in dla { labels[d.label.id] = d.label }
        for d in patch { labels[d.label.id] = d.label }
        for d in training { labels[d.label.id] = d.label }
        for d in analyses { labels[d.label.id] = d.label }
        var table = Table(columns: ["run", "command", "model", "LN mode", "prompt set", "prompts", "status", "headline"],
                          textColumns: [1, 2, 3, 4, 6, 7])
        for run in runs {
            let label = labels[run.id!] ?? RunLabel(run)
            let stored = label.storedPrompts.map { $0 == run.nPrompts ? "\(run.nPrompts)" : "\($0) of \(run.nPrompts)" }
            var headline = ""
            if let d = dla.first(where: { $0.label.id == run.id }), !d.pairs.isEmpty {
                headline = "NMAE over heads \(Show.percent(d.nmae.headsGlobal)) (\(Show.interval(d.intervals.headsGlobal)))"
            } else if let p = patch.first(where: { $0.label.id == run.id }), !p.sites.isEmpty {
                let estimators = PatchData.quantities.dropFirst().filter { q in p.sites.contains { p.estimators(site: $0).contains(q) } }
                headline = "sites " + p.sites.joined(separator: ", ") + "; activation patching"
                    + estimators.map { ", " + PatchFigures.quantityName($0) }.joined()
            } else if let t = training.first(where: { $0.label.id == run.id }) {
                if let last = t.steps.last { headline = "loss \(Markup.fixed(last.loss, 4)) at step \(last.step)" }
                if !t.evals.isEmpty {
                    headline = "eval loss " + t.evals.map { e in
                        "\(e.key) \(e.metrics[StoreName.loss].map { Markup.fixed($0, 4) } ?? "–")"
                    }.joined(separator: ", ")
                }
            }
            if let a = analyses.first(where: { $0.label.id == run.id }) { headline = a.headline }
            table.rows.append(["\(run.id!)", run.command, label.model, run.lnMode, label.promptSet,
                               stored ?? "\(run.nPrompts)", run.status.rawValue + (run.error.map { ": \($0)" } ?? ""), headline])
        }
        return table
    }

    /// The circuit runs' faithfulness curves on one axis, then each run's drawn circuit.
    static func circuitSection(_ page: inout Page, _ runs: [CircuitData]) {
        page.heading("Circuits and faithfulness")
        page.paragraph("For each size, the circuit of the edges with the largest |mean score| (or hannamw's greedy or threshold selection), "
                       + "pruned to paths from the input to the logits, evaluated with every other edge patched from the corrupted run. "
                       + "Faithfulness 0: the corrupted run; 1: the clean run. The graphs show, per run, the largest circuit of at most "
                       + "40 edges of its first method.", note: true)
        let drawn = runs.filter { !$0.report.curves.isEmpty }
        for run in runs where run.report.curves.isEmpty { page.paragraph("\(run.label.provenance): no faithfulness rows stored.", note: true) }
        guard !drawn.isEmpty else { return }
        page.figure(CircuitFigures.curves(drawn), label: "faithfulness curves")
        let graphs = drawn.compactMap { run in run.drawnCircuit().map { CircuitFigures.graph(run, $0) } }
        if !graphs.isEmpty { page.figure(Layout.sideBySide(graphs), label: "circuits as layered graphs") }
        for (i, a) in drawn.enumerated() {
            for b in drawn[(i + 1)...] { overlapTable(&page, a, b) }
        }
    }

    /// overlap@k of two circuit runs (`CircuitOverlap`, as `lnlens circuit` and `diff` print it),
    /// when they share a (method, selection, size).
    static func overlapTable(_ page: inout Page, _ a: CircuitData, _ b: CircuitData) {
        let overlaps = CircuitOverlap.between(a.report, b.report)
        guard !overlaps.isEmpty else { return }
        page.paragraph("overlap@k of the circuits' edge sets, A: run \(a.label.id) \(a.label.model), B: run \(b.label.id) \(b.label.model) "
                       + "(|A ∩ B| / max(|A|, |B|))", note: true)
        var table = Table(columns: ["method", "selection", "requested", "edges A", "edges B", "shared", "overlap"], textColumns: [0, 1])
        for o in overlaps {
            table.rows.append([o.method, o.selection, CircuitSpec.text(o.requested), "\(o.edgesA)", "\(o.edgesB)", "\(o.shared)",
                               String(format: "%.3f", o.overlap)])
        }
        page.table(table)
    }

    static func dlaSection(_ page: inout Page, _ runs: [DLAData]) {
        page.heading("Direct logit attribution against the exact direct effect")
        page.paragraph("NMAE = mean |DLA − DE| / mean |DE| × 100 over (prompt, head) pairs; DE is the exact direct effect "
                       + "(the final LayerNorm recomputed without the head). Intervals: percentile bootstrap, "
                       + "\(Markup.count(Metrics.bootstrapResamples)) resamples of \(DLAFigures.bootstrapText(runs)).", note: true)
        let drawn = runs.filter { !$0.pairs.isEmpty }
        for run in runs where run.pairs.isEmpty {
            page.paragraph("\(run.label.provenance): no head rows stored, nothing to draw.", note: true)
        }
        guard !drawn.isEmpty else { return }
        page.figure(DLAFigures.headNMAE(drawn), label: "per-head NMAE heatmaps")
        page.figure(DLAFigures.layerNMAE(drawn), label: "per-layer NMAE with bootstrap intervals")
        page.figure(DLAFigures.scatter(drawn), label: "DLA against the exact direct effect")
        page.raw("<div class=\"tables\">")
        for run in drawn {
            var table = Table(columns: ["head", "mean |DE|", "mean DE", "mean DLA", "NMAE %"], textColumns: [0])
            let heads = Array(run.ranked.prefix(topHeads))
            let format = NumberFormat(for: heads.flatMap { [$0.meanAbsDE, $0.meanDE, $0.meanDLA, $0.nmae] })
            for h in heads {
                table.rows.append([h.component.description, format(h.meanAbsDE), format(h.meanDE), format(h.meanDLA), format(h.nmae)])
            }
            page.raw("<div>")
            page.paragraph("Heads with the largest direct effects", strong: true)
            page.paragraph(run.label.provenance + " · means over prompts, logit units", note: true)
            page.table(table)
            page.raw("</div>")
        }
        page.raw("</div>")
    }

    /// The patch runs together, so that their maps share colour scales: per position site the
    /// layer × position maps per template, the layer × head maps, the scatters; then each run's
    /// estimator errors.
    static func patchSection(_ page: inout Page, _ runs: [PatchData], options: FigureOptions) {
        page.heading("Activation patching against attribution patching")
        page.paragraph("Effects on the metric logit[answer] − logit[wrong] at the last position (logit diff). AtP estimates the "
                       + "signed effect and is drawn beside activation patching on one diverging scale; AtP* estimates |effect| "
                       + "and is drawn beside |activation patching| on one sequential scale. Every run below shares those scales.",
                       note: true)
        for run in runs where run.sites.isEmpty {
            page.paragraph("\(run.label.provenance): no activation-patching rows at \(PatchData.drawnSites.joined(separator: ", ")): no maps.",
                           note: true)
        }
        let drawn = runs.filter { !$0.sites.isEmpty }
        let ids = drawn.map { "\($0.label.id)" }.joined(separator: ", ")
        for site in StoreName.positionSites where drawn.contains(where: { $0.positionSites.contains(site) }) {
            page.figure(PatchFigures.positionMaps(drawn, site: site, templates: options.templates),
                        label: "\(site) patching maps of run\(drawn.count > 1 ? "s" : "") \(ids)")
        }
        if drawn.contains(where: { !$0.headSites.isEmpty }) {
            page.figure(PatchFigures.headMaps(drawn), label: "per-head patching maps of run\(drawn.count > 1 ? "s" : "") \(ids)")
        }
        let estimated = drawn.filter { run in run.sites.contains { !run.estimators(site: $0).isEmpty } }
        if !estimated.isEmpty {
            page.figure(PatchFigures.scatter(estimated), label: "estimates against activation patching, run\(estimated.count > 1 ? "s" : "") \(ids)")
        }
        if let decomposition = DecompositionFigure.draw(runs) {
            page.figure(decomposition, label: "AtP's error per linearised variant (patch --decompose)")
        }
        for run in runs {
            let all = run.errors.filter { $0.layer == nil }, perLayer = run.errors.filter { $0.layer != nil }
            if run.errors.isEmpty {
                page.paragraph("\(run.label.provenance): no estimator errors stored.", note: true)
                continue
            }
            page.paragraph("Estimators against activation patching (all layers)", strong: true)
            page.paragraph(run.label.provenance + " · AtP* against |activation patching| · normalised: values divided by "
                           + "metric(clean) − metric(corrupt) per prompt", note: true)
            page.table(errorTable(all, withLayer: false))
            if !perLayer.isEmpty {
                page.raw("<details><summary>per layer (\(perLayer.count) rows)</summary>")
                page.table(errorTable(perLayer, withLayer: true))
                page.raw("</details>")
            }
        }
    }

    /// Metrics of `estimator_errors` in reading order; unknown ones follow alphabetically.
    static let errorMetrics = (ErrorMetric.quality + [.n]).map(\.rawValue)
    /// Metrics that count something: printed as integers, outside the table's number format.
    static let countMetrics: Set<String> = [ErrorMetric.n.rawValue]

    static func errorTable(_ rows: [ErrorRow], withLayer: Bool) -> Table {
        let present = Set(rows.map(\.metric))
        let metrics = errorMetrics.filter(present.contains) + present.subtracting(errorMetrics).sorted()
        struct Key: Hashable, Comparable {
            let site: String, method: String, layer: Int, normalized: Bool
            static func < (a: Key, b: Key) -> Bool {
                let order = PatchSite.allCases.map(\.rawValue)
                func rank(_ s: String) -> Int { order.firstIndex(of: s) ?? order.count }
                return (rank(a.site), a.site, a.method, a.layer, a.normalized ? 1 : 0)
                    < (rank(b.site), b.site, b.method, b.layer, b.normalized ? 1 : 0)
            }
        }
        let grouped = Dictionary(grouping: rows) { Key(site: $0.site, method: $0.method, layer: $0.layer ?? -1, normalized: $0.normalized) }
        var table = Table(columns: ["site", "estimator"] + (withLayer ? ["layer"] : []) + ["values"] + metrics,
                          textColumns: withLayer ? [0, 1, 3] : [0, 1, 2])
        // Three decimals at least: correlations and recalls near 1 differ in the third.
        let format = NumberFormat(for: rows.filter { !countMetrics.contains($0.metric) }.map(\.value), minDecimals: 3)
        for key in grouped.keys.sorted() {
            let values = Dictionary(grouped[key]!.map { ($0.metric, $0.value) }, uniquingKeysWith: { a, _ in a })
            table.rows.append([key.site, PatchFigures.quantityName(key.method)] + (withLayer ? ["L\(key.layer)"] : [])
                              + [key.normalized ? "normalised" : "raw"]
                              + metrics.map { m in values[m].map { countMetrics.contains(m) ? Show.count($0) : format($0) } ?? "" })
        }
        return table
    }

    /// Sink rates, residual norms and the logit lens, each kind's runs in one figure.
    static func analysisSection(_ page: inout Page, _ runs: [AnalysisData]) {
        for run in runs where run.values.isEmpty {
            page.paragraph("\(run.label.provenance): no summaries stored (the run did not complete), nothing to draw.", note: true)
        }
        let drawn = runs.filter { !$0.values.isEmpty }
        let sinks = drawn.filter { $0.label.command == StoreName.sinksCommand }
        let norms = drawn.filter { $0.label.command == StoreName.normsCommand }
        let lens = drawn.filter { $0.label.command == StoreName.lensCommand }
        if !sinks.isEmpty {
            page.heading("Attention sinks")
            page.paragraph("A head is a sink at a query position when its attention to position 0 exceeds eps; its rate is the "
                           + "fraction of query positions (docs/analyses.md). Means over units.", note: true)
            page.figure(AnalysisFigures.sinkRates(sinks), label: "attention-sink rate heatmaps")
        }
        if !norms.isEmpty {
            page.heading("Residual-stream norms")
            page.paragraph("L2 norm of each hook's activation, position 0 apart from the others (for an LN-free model the last "
                           + "resid_post stands in for ln_final, as the paper's code does).", note: true)
            page.figure(AnalysisFigures.norms(norms), label: "residual-stream norms")
        }
        if !lens.isEmpty {
            page.heading("Logit lens")
            page.paragraph("Each residual read centred, divided by the final LayerNorm scale and unembedded (TransformerLens's "
                           + "accumulated_resid(apply_ln=True) @ W_U + b_U); exactly linear for an LN-free model.", note: true)
            page.figure(AnalysisFigures.lens(lens), label: "logit lens")
        }
    }

    /// `compare` runs: the per-token distributions with their means and intervals.
    static func compareSection(_ page: inout Page, _ runs: [CompareData]) {
        page.heading("Divergence from the original")
        page.paragraph("Per token: each model's cross-entropy and entropy, and the JSD and KL(original ‖ model) of its next-token "
                       + "distribution against the original's (docs/analyses.md). Dashed: the mean; shaded: its 95% bootstrap interval "
                       + "(1,000 resamples, as the paper's analyse_models.py).", note: true)
        for run in runs {
            guard !run.values.isEmpty else {
                page.paragraph("\(run.label.provenance): no rows stored, nothing to draw.", note: true)
                continue
            }
            page.figure(CompareFigures.divergence(run), label: "divergence distributions of run \(run.label.id)")
        }
    }

    /// Entropy neurons: the cumulative ablation curves and the null-space scatter.
    static func neuronSection(_ page: inout Page, _ runs: [NeuronData]) {
        let drawn = runs.filter { !$0.analysis.values.isEmpty }
        guard !drawn.isEmpty else { return }
        page.heading("Entropy neurons")
        page.paragraph("The first k neurons of the ranking (‖w_out‖ / LogitVar) mean-ablated together in the last MLP: change in "
                       + "mean next-token loss and entropy from k = 0, as the paper's cumulative_ablation.py plots it "
                       + "(docs/analyses.md).", note: true)
        page.figure(NeuronFigures.ablationCurves(drawn), label: "cumulative entropy-neuron ablation")
        if drawn.contains(where: { !$0.neurons.isEmpty }) {
            page.figure(NeuronFigures.nullSpace(drawn.filter { !$0.neurons.isEmpty }), label: "null-space fraction against ‖w_out‖")
        }
    }

    static func trainingSection(_ page: inout Page, _ runs: [TrainingData]) {
        page.heading("Training and evaluation")
        let curves = runs.filter { !$0.steps.isEmpty }
        if !curves.isEmpty { page.figure(TrainingFigures.loss(curves), label: "training loss") }
        for run in runs where run.steps.isEmpty && run.label.command != StoreName.evalCommand {
            page.paragraph("\(run.label.provenance): no training steps stored.", note: true)
        }
        if !curves.isEmpty {
            var table = Table(columns: ["run", "command", "model", "LN mode", "steps", "first loss", "lowest loss (step)",
                                        "last loss", "events"], textColumns: [1, 2, 3])
            for run in curves {
                let best = run.steps.min { $0.loss < $1.loss }!
                table.rows.append(["\(run.label.id)", run.label.command, run.label.model, run.label.lnMode, "\(run.steps.count)",
                                   Markup.fixed(run.steps.first!.loss, 4), "\(Markup.fixed(best.loss, 4)) (\(best.step))",
                                   Markup.fixed(run.steps.last!.loss, 4), "\(run.steps.filter { $0.event != nil }.count)"])
            }
            page.paragraph("Training loss", strong: true)
            page.table(table)
        }
        let evals = runs.flatMap { run in run.evals.map { (run, $0) } }
        let known = [StoreName.loss, StoreName.ciLow, StoreName.ciHigh]
        let extra = Set(evals.flatMap { $0.1.metrics.keys }).subtracting(known).sorted()
        if !evals.isEmpty {
            var table = Table(columns: ["run", "model", "LN mode", "corpus", "loss (nats)", "95% CI"] + extra, textColumns: [1, 2, 3])
            // Counts (windows, tokens) as integers; everything else as the losses are.
            let counts = Set(extra.filter { m in evals.allSatisfy { e in e.1.metrics[m].map { $0 == $0.rounded() } ?? true } })
            let format = NumberFormat(decimals: 4)
            for (run, e) in evals {
                let ci = [e.metrics[StoreName.ciLow], e.metrics[StoreName.ciHigh]]
                table.rows.append(["\(run.label.id)", e.key, e.lnMode ?? "not recorded", run.label.promptSet,
                                   e.metrics[StoreName.loss].map(format.callAsFunction) ?? "",
                                   ci.contains(nil) ? "" : "\(format(ci[0]!))–\(format(ci[1]!))"]
                                  + extra.map { m in e.metrics[m].map { counts.contains(m) ? Show.count($0) : format($0) } ?? "" })
            }
            page.paragraph("Evaluation loss (summaries of scope eval), the models in the order the command was given them", strong: true)
            page.table(table)
        }
        for run in runs where run.label.command == StoreName.evalCommand && run.evals.isEmpty {
            page.paragraph("\(run.label.provenance): no eval summaries stored.", note: true)
        }
    }
}

/// A table as text cells; `textColumns` are left-aligned, the rest (numbers) right-aligned.
struct Table {
    var columns: [String]
    var textColumns: Set<Int>
    var rows: [[String]] = []
}

/// An HTML page being built. Every text passes through `Markup.escape`.
struct Page {
    private var body: [String] = []

    static let style = """
        body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; color: #222222; background: #ffffff;
               margin: 24px auto; padding: 0 24px; max-width: 1440px; font-size: 14px; }
        h1 { font-size: 22px; margin: 0 0 6px 0; }
        h2 { font-size: 17px; margin: 34px 0 8px 0; padding-bottom: 4px; border-bottom: 1px solid #dddddd; }
        p { margin: 6px 0; }
        p.note { color: #666666; font-size: 12.5px; }
        table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 14px 0; }
        th, td { padding: 3px 9px; border-bottom: 1px solid #e6e6e6; text-align: right; white-space: nowrap; }
        th { background: #f4f4f4; font-weight: 600; }
        .t { text-align: left; }
        figure { margin: 14px 0 22px 0; overflow-x: auto; }
        figure svg { max-width: 100%; height: auto; display: block; }
        .tables { display: flex; flex-wrap: wrap; gap: 8px 40px; }
        details { margin: 0 0 14px 0; font-size: 12.5px; }
        summary { cursor: pointer; color: #444444; }
        """

    mutating func raw(_ html: String) { body.append(html) }

    mutating func heading(_ text: String) { body.append("<h2>\(Markup.escape(text))</h2>") }

    mutating func paragraph(_ text: String, note: Bool = false, strong: Bool = false) {
        let inner = strong ? "<strong>\(Markup.escape(text))</strong>" : Markup.escape(text)
        body.append(note ? "<p class=\"note\">\(inner)</p>" : "<p>\(inner)</p>")
    }

    mutating func figure(_ svg: SVG, label: String) {
        body.append("<figure>")
        body.append(svg.render(label: label, standalone: false))
        body.append("</figure>")
    }

    mutating func table(_ table: Table) {
        func cls(_ i: Int) -> String { table.textColumns.contains(i) ? " class=\"t\"" : "" }
        var out = ["<table>", "<tr>" + table.columns.enumerated().map { "<th\(cls($0.offset))>\(Markup.escape($0.element))</th>" }.joined() + "</tr>"]
        for row in table.rows {
            out.append("<tr>" + row.enumerated().map { "<td\(cls($0.offset))>\(Markup.escape($0.element))</td>" }.joined() + "</tr>")
        }
        out.append("</table>")
        body.append(out.joined(separator: "\n"))
    }

    func document(title: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title>\(Markup.escape(title))</title>
        <style>
        \(Self.style)
        </style>
        </head>
        <body>
        \(body.joined(separator: "\n"))
        </body>
        </html>

        """
    }
}

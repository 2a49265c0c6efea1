import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support

struct PatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Activation patching against attribution patching (AtP, AtP*), site by site, stored in SQLite.",
        discussion: """
            Every prompt needs "wrong" and a "corrupt" prompt of the same token length. The metric is the \
            logit difference answer − wrong at the last position. denoise (default) patches the clean \
            activation into the corrupted run: effect = metric(patched) − metric(corrupt); noise patches \
            the corrupted activation into the clean run: effect = metric(patched) − metric(clean). \
            AtP = Σ (donor − patched-run activation) · ∂metric/∂activation on the patched run; AtP* adds \
            the QK fix (q, k sites) and GradDrop and estimates |effect| (docs/patching.md has the formulas). \
            Sites: \(PatchSite.allCases.map(\.rawValue).joined(separator: ", ")).
            """)

    @Option(name: .customLong("model"), help: "Model folder or name; repeat for several (default: gpt2-tiny and gpt2-tiny-lnfree).")
    var models: [String] = []
    @Option(help: "Prompt set (JSONL with prompt, answer, wrong, corrupt), or a shipped set's name.") var prompts: String
    @Option(help: "Comma-separated site kinds.") var sites = "resid_pre,attn_out,mlp_out,z"
    @Option(help: "Comma-separated methods: activation, atp, atp-star.") var methods = "activation,atp"
    @Option(help: ArgumentHelp("denoise (clean into corrupted) or noise (corrupted into clean).", valueName: "direction"))
    var direction = "denoise"
    @Flag(inversion: .prefixedNo,
          help: "Put <|endoftext|> first in both prompts, as TransformerLens's to_tokens and the paper do (default; --no-prepend-bos: the prompts as they are).")
    var prependBos = true
    @Flag(help: "Skip and count invalid prompt lines instead of stopping at the first.") var skipInvalid = false
    @Option(help: "SQLite database to store the runs in.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue an interrupted run (one --model, same prompts and options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @Option(help: "Prompt pairs per forward pass.") var batchSize = 16
    @Option(help: "Prompts stored per transaction (the unit an interrupted run resumes from).") var chunkSize = 32
    @OptionGroup var sharding: ShardOption
    @Option(help: ArgumentHelp("Normalise the printed grids per prompt by activation patching at LAYER,POS (the paper: 0,11) instead of metric(clean) − metric(corrupt).",
                               valueName: "layer,pos"))
    var gridNormalize: String?
    @Option(help: ArgumentHelp("Prompts whose |metric(clean) − metric(corrupt)| is below this many logits are left out of the estimator errors and normalised grids (0: keep all).",
                               valueName: "logits"))
    var minGap = TaskCheck.defaultMinGap
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON (every row).") var json = false
    @Flag(help: "Print CSV (every row).") var csv = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if resume != nil && models.count > 1 { throw ValidationError("--resume continues one run: give the one --model it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if !(minGap >= 0 && minGap.isFinite) { throw ValidationError("--min-gap \(minGap): give a number of logits ≥ 0, e.g. 0.5") }
        if PatchDirection(rawValue: direction) == nil { throw ValidationError("--direction \(direction): use denoise or noise") }
        _ = try PatchSite.parseList(sites)
        let m = try PatchMethod.parseList(methods)
        if !m.contains(.activation) {
            throw ValidationError("--methods must include activation: the estimators are measured against it")
        }
        if let gridNormalize, parsedGridNormalize == nil {
            throw ValidationError("--grid-normalize \(gridNormalize): give LAYER,POS, e.g. 0,11")
        }
        if gridNormalize != nil, !(try PatchSite.parseList(sites)).contains(.residPre) {
            throw ValidationError("--grid-normalize divides by activation patching at resid_pre: add resid_pre to --sites")
        }
    }

    var parsedGridNormalize: (layer: Int, position: Int)? {
        guard let g = gridNormalize else { return nil }
        let parts = g.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, parts.allSatisfy({ $0 >= 0 }) else { return nil }
        return (parts[0], parts[1])
    }

    var modelSpecs: [String] {
        models.isEmpty ? (resume == nil ? [EmbeddedModels.defaultName, EmbeddedModels.lnFreeName] : [EmbeddedModels.defaultName]) : models
    }

    func run() throws {
        // Opened once the first model and its inputs have passed their checks: a bad prompt
        // file must not leave a new, empty database behind.
        var opened: ResultsDatabase?
        func store() throws -> ResultsDatabase {
            if let opened { return opened }
            opened = try ResultsDatabase(path: db)
            return opened!
        }
        let siteList = try PatchSite.parseList(sites), methodList = try PatchMethod.parseList(methods)
        let shard = try sharding.resolved()
        var runIDs: [Int64] = []
        for spec in modelSpecs {
            let loaded = try LoadedModel.load(spec, processing: processing.options)
            let tok = try loaded.requireTokenizer()
            let set = try loadPromptSet(prompts, model: loaded, skipInvalid: skipInvalid, prependBOS: prependBos)
                .requiringPairs(skipInvalid: skipInvalid)
            var options: [String: Any] = [
                "models": modelSpecs.joined(separator: ","), "db": db, "prompts": prompts, "sites": siteList.map(\.rawValue).joined(separator: ","),
                "methods": methodList.map(\.rawValue).joined(separator: ","), "direction": direction,
                "prepend_bos": prependBos, "skip_invalid": skipInvalid, "batch_size": batchSize,
                "chunk_size": chunkSize, "processing": processing.stored,
            ]
            // Only printing and `report` use it (not a result option: a resume may change it).
            if let g = parsedGridNormalize { options["grid_normalize"] = "\(g.layer),\(g.position)" }
            var job = PatchJob(model: loaded.model, modelPath: loaded.checkpoint.directory.path,
                               modelHash: try loaded.weightsHash(), prompts: set,
                               sites: siteList, methods: methodList, direction: PatchDirection(rawValue: direction)!,
                               tokenText: { tok.tokenString($0) },
                               optionsJSON: RunOptions.json(options),
                               toolVersion: LNLensVersion.string)
            job.batchSize = batchSize
            job.chunkSize = chunkSize
            job.shard = shard
            job.forceResume = forceResume
            job.minGap = minGap
            let id = try ProgressLine.run(label: spec, unit: "prompt pairs") {
                try job.run(db: try store(), resume: resume, progress: $0, phase: $1)
            }
            runIDs.append(id)
        }
        let database = try store()
        let reading = ProgressLine(label: "patch", unit: "runs")
        reading.phase("reading \(runIDs.count == 1 ? "the run" : "the \(runIDs.count) runs") back from \(db)")
        let reports = try runIDs.map { try PatchReport(db: database, runID: $0) }
        reading.finish()
        for r in reports { if let w = r.task?.warning(model: r.modelName) { printErr("lnlens: warning: " + w) } }
        if json { return try printJSON(["runs": reports]) }
        if csv {
            print("run_id,model,model_name,ln_mode,prompt,site,layer,pos,head,activation,atp,atp_star")
            for r in reports {
                for row in r.rows {
                    func f(_ v: Double?) -> String { v.map { "\($0)" } ?? "" }
                    func i(_ v: Int?) -> String { v.map(String.init) ?? "" }
                    print("\(r.runID),\(csvField(r.model)),\(csvField(r.modelName)),\(r.lnMode),\(row.prompt),\(row.site),\(row.layer),\(i(row.pos)),\(i(row.head)),\(f(row.activation)),\(f(row.atp)),\(f(row.atpStar))")
                }
            }
            return
        }
        for r in reports { r.printSummary(gridNormalize: parsedGridNormalize) }
        if reports.count > 1 { PatchReport.printSideBySide(reports) }
        print("stored in \(db) as run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", "))"
              + (runIDs.count == 2 ? "; compare them with: lnlens diff \(runIDs[0]) \(runIDs[1]) --db \(db)" : ""))
    }
}

/// One stored patch run, read back for printing (`--json` in the shape of the README).
struct PatchReport: Encodable {
    struct Prompt: Encodable {
        let prompt: Int
        let cleanMetric: Double
        let corruptMetric: Double
        enum CodingKeys: String, CodingKey { case prompt, cleanMetric = "clean_metric", corruptMetric = "corrupt_metric" }
    }
    struct Row: Encodable {
        let prompt: Int, site: String, layer: Int, pos: Int?, head: Int?
        let activation: Double?, atp: Double?, atpStar: Double?
        enum CodingKeys: String, CodingKey { case prompt, site, layer, pos, head, activation, atp, atpStar = "atp_star" }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(site, forKey: .site)
            try c.encode(layer, forKey: .layer)
            try c.encode(pos, forKey: .pos)
            try c.encode(head, forKey: .head)
            try c.encode(activation, forKey: .activation)
            try c.encode(atp, forKey: .atp)
            try c.encodeIfPresent(atpStar, forKey: .atpStar)
        }
    }
    let runID: Int64, model: String, lnMode: String, direction: String
    let prompts: [Prompt]
    /// site → method → metric → value (all layers, raw values).
    let errors: [String: [String: [String: Double?]]]
    let rows: [Row]
    let allErrors: [ErrorRow]
    let tokens: [Int: [String]]
    /// The run's task check (`StoredRuns.taskCheck`).
    let task: TaskCheck?

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", model, modelName = "model_name", lnMode = "ln_mode", direction, task, prompts, errors, rows
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runID, forKey: .runID)
        try c.encode(model, forKey: .model)
        try c.encode(modelName, forKey: .modelName)
        try c.encode(lnMode, forKey: .lnMode)
        try c.encode(direction, forKey: .direction)
        try c.encode(task, forKey: .task)
        try c.encode(prompts, forKey: .prompts)
        try c.encode(errors, forKey: .errors)
        try c.encode(rows, forKey: .rows)
    }

    init(db: ResultsDatabase, runID: Int64) throws {
        guard let run = try db.run(id: runID) else { throw CLIError.usage("no run \(runID) in \(db.path)") }
        self.runID = runID
        model = run.modelPath
        lnMode = run.lnMode
        let options = (try? JSONSerialization.jsonObject(with: Data(run.optionsJSON.utf8))) as? [String: Any]
        direction = options?["direction"] as? String ?? "denoise"
        let stored = try db.results(runID: runID)
        var clean: [Int: Double] = [:], corrupt: [Int: Double] = [:]
        struct Key: Hashable { let prompt: Int, site: String, layer: Int, pos: Int?, head: Int? }
        var values: [Key: [String: Double]] = [:]
        for r in stored {
            if r.site == PatchJob.metricSite {
                if r.quantity == PatchJob.cleanQuantity { clean[r.promptIndex] = r.value }
                if r.quantity == PatchJob.corruptQuantity { corrupt[r.promptIndex] = r.value }
            } else if let layer = r.layer {
                values[Key(prompt: r.promptIndex, site: r.site, layer: layer, pos: r.position, head: r.head), default: [:]][r.quantity] = r.value
            }
        }
        prompts = clean.keys.sorted().map { Prompt(prompt: $0, cleanMetric: clean[$0]!, corruptMetric: corrupt[$0] ?? .nan) }
        let order = PatchSite.allCases.map(\.rawValue)
        rows = values.keys.sorted {
            ($0.prompt, order.firstIndex(of: $0.site) ?? 99, $0.layer, $0.pos ?? -1, $0.head ?? -1)
                < ($1.prompt, order.firstIndex(of: $1.site) ?? 99, $1.layer, $1.pos ?? -1, $1.head ?? -1)
        }.map { k in
            let v = values[k]!
            return Row(prompt: k.prompt, site: k.site, layer: k.layer, pos: k.pos, head: k.head, activation: v[StoreName.activation],
                       atp: v[StoreName.atp], atpStar: v[StoreName.atpStar])
        }
        allErrors = try db.estimatorErrors(runID: runID)
        var errors: [String: [String: [String: Double?]]] = [:]
        for e in allErrors where e.layer == nil && !e.normalized && e.metric != "n" && e.metric != "n_structural_zeros" {
            errors[e.site, default: [:]][e.method, default: [:]][e.metric] = e.value.isFinite ? e.value : nil
        }
        self.errors = errors
        tokens = Dictionary(uniqueKeysWithValues: try db.prompts(runID: runID).compactMap { p in p.tokens.map { (p.promptIndex, $0) } })
        task = try StoredRuns.taskCheck(db: db, run: run)
    }

    var modelName: String { ModelPath.shortName(model) }

    func printSummary(gridNormalize: (layer: Int, position: Int)?) {
        let n = prompts.count
        let meanClean = prompts.map(\.cleanMetric).reduce(0, +) / Double(max(n, 1))
        let meanCorrupt = prompts.map(\.corruptMetric).reduce(0, +) / Double(max(n, 1))
        print("\(modelName) (\(lnMode)) — run \(runID), \(n) prompt pairs, \(direction)")
        if n == 0 {
            print("  no prompt pairs in this run (an empty shard: fewer valid prompts than shards): nothing to summarise")
            return
        }
        print(String(format: "  logit difference: clean %.4f, corrupt %.4f (means over prompts)", meanClean, meanCorrupt))
        if let task {
            print("  " + task.line() + (task.passed == false ? " — TASK CHECK FAILED" : ""))
        }
        let left = task.map { $0.smallGap.isEmpty ? "" : "; \($0.smallGap.count) prompts below --min-gap left out" } ?? ""
        print("  estimators against activation patching (all layers; raw values; atp_star against |activation|\(left)):")
        print("    site            method     NMAE %   pearson  spearman   sign   top10  top5%        n  zeros")
        let siteOrder = PatchSite.allCases.map(\.rawValue)
        for site in errors.keys.sorted(by: { (siteOrder.firstIndex(of: $0) ?? 99) < (siteOrder.firstIndex(of: $1) ?? 99) }) {
            for method in errors[site]!.keys.sorted() {
                let e = errors[site]![method]!
                func v(_ k: String, _ f: String) -> String { (e[k] ?? nil).map { String(format: f, $0) } ?? "      -" }
                func count(_ metric: String) -> String {
                    let value = allErrors.first { $0.site == site && $0.method == method && $0.layer == nil && !$0.normalized && $0.metric == metric }?.value
                    return value.map { String(format: "%7.0f", $0) } ?? "      -"
                }
                print("    " + padded(site, 15) + " " + padded(method, 9) + rightAligned(nmaeText(e["nmae"] ?? nil), 9) + " " + v("pearson", "%7.3f") + "  "
                      + v("spearman", "%7.3f") + "  " + v("sign_agreement", "%5.2f") + "  " + v("topk_recall_10", "%5.2f") + "  "
                      + v("topk_recall_5pct", "%5.2f") + "  " + count("n") + "  " + count("n_structural_zeros"))
            }
        }
        printGrids(gridNormalize: gridNormalize)
        print("")
    }

    /// Layer × position grids of the position sites: means over prompts of equal length.
    func printGrids(gridNormalize: (layer: Int, position: Int)?) {
        let lengths = Dictionary(grouping: rows.filter { $0.pos != nil && $0.head == nil }, by: { tokens[$0.prompt]?.count ?? 0 })
        guard let (T, gridRows) = lengths.max(by: { $0.value.count < $1.value.count }), T > 0 else { return }
        let gaps: [Int: Double] = Dictionary(uniqueKeysWithValues: prompts.map { ($0.prompt, $0.cleanMetric - $0.corruptMetric) })
        var norm: [Int: Double] = [:]
        for r in gridRows where r.site == "resid_pre" {
            if let g = gridNormalize, r.layer == g.layer, r.pos == g.position, let a = r.activation { norm[r.prompt] = a }
        }
        let label = gridNormalize.map { "activation patching at layer \($0.layer), position \($0.position)" } ?? "metric(clean) − metric(corrupt)"
        if let g = gridNormalize, norm.isEmpty {
            printErr("lnlens: warning: --grid-normalize \(g.layer),\(g.position): no prompt has resid_pre at layer \(g.layer), "
                     + "position \(g.position) (\(T) tokens, layers from 0); no grid printed")
            return
        }
        // Prompts below --min-gap are left out: their divisor is near 0 or their effects noise.
        let leftOut = Set(task?.smallGap ?? []).intersection(gridRows.map(\.prompt))
        let promptsUsed = Set(gridRows.map(\.prompt)).subtracting(leftOut)
        if !leftOut.isEmpty {
            print("  grids leave out \(leftOut.count) prompt\(leftOut.count == 1 ? "" : "s") of \(T) tokens below --min-gap \(String(format: "%g", task!.minGap)): "
                  + TaskCheck.list(leftOut.sorted(), names: 12))
        }
        guard let firstPrompt = promptsUsed.min() else {
            print("  no grid: every prompt of \(T) tokens is below --min-gap")
            return
        }
        let firstTokens = tokens[firstPrompt] ?? []
        for site in PatchSite.allCases.map(\.rawValue) {
            let siteRows = gridRows.filter { $0.site == site }
            guard !siteRows.isEmpty else { continue }
            let layers = Set(siteRows.map(\.layer)).sorted()
            for (method, pick) in [("activation", \Row.activation), ("atp", \Row.atp)] as [(String, KeyPath<Row, Double?>)] {
                var sum = [Int: [Int: Double]](), count = [Int: [Int: Int]]()
                for r in siteRows where promptsUsed.contains(r.prompt) {
                    guard let v = r[keyPath: pick] else { continue }
                    let d = gridNormalize == nil ? gaps[r.prompt] : norm[r.prompt]
                    guard let d, d != 0, d.isFinite else { continue }
                    sum[r.layer, default: [:]][r.pos!, default: 0] += v / d
                    count[r.layer, default: [:]][r.pos!, default: 0] += 1
                }
                guard !sum.isEmpty else { continue }
                print("  \(site), \(method), mean over \(promptsUsed.count) prompts of \(T) tokens, normalised by \(label):")
                print("        " + (0..<T).map { String(firstTokens[safe: $0]?.prefix(6) ?? "\($0)").padding(toLength: 7, withPad: " ", startingAt: 0) }.joined())
                for l in layers {
                    var line = "    " + padded("L\(l)", 4)
                    for p in 0..<T {
                        if let s = sum[l]?[p], let c = count[l]?[p], c > 0 { line += String(format: "%7.2f", s / Double(c)) } else { line += "      -" }
                    }
                    print(line)
                }
            }
        }
    }

    static func printSideBySide(_ reports: [PatchReport]) {
        print("side by side: estimator NMAE % against activation patching (all layers, raw values):")
        let sites = Set(reports.flatMap { $0.errors.keys }).sorted()
        print("    site            method   " + reports.map { padded("\($0.modelName) (\($0.lnMode))", 28) }.joined())
        for site in sites {
            let methods = Set(reports.flatMap { $0.errors[site]?.keys.map { $0 } ?? [] }).sorted()
            for method in methods {
                let values = reports.map { $0.errors[site]?[method]?["nmae"] ?? nil }
                var line = "    " + padded(site, 15) + " " + padded(method, 9)
                for v in values { line += padded(nmaeText(v), 28) }
                if values.count == 2, let a = values[0], let b = values[1] {
                    line += b < a ? "better without LN" : (b > a ? "worse without LN" : "same")
                    if reports.contains(where: { $0.task?.passed == false }) { line += " (not meaningful: a task check failed)" }
                }
                print(line)
            }
        }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

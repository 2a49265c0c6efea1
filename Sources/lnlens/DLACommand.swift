import Analysis
import ArgumentParser
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support

struct DLACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dla",
        abstract: "Direct logit attribution against the exact direct effect, per component and prompt, stored in SQLite.")

    @Option(name: .customLong("model"), help: "Model folder or name; repeat for several (default: gpt2-tiny and gpt2-tiny-lnfree).")
    var models: [String] = []
    @Option(help: "Prompt set (JSONL: prompt, answer, wrong, corrupt).") var prompts: String?
    @Option(help: "Plain-text file: attribute every position's actual next token.") var text: String?
    @Option(help: "Text mode: at most this many predicted positions.") var maxTokens: Int?
    @Option(help: "Text mode: window length in tokens.") var context = 128
    @Option(help: ArgumentHelp("Text mode: next-token (every position, its actual next token) or paper (the last position of each window, to the token there, as the paper's code does).", valueName: "next-token|paper"))
    var targets = "next-token"
    @Flag(help: "Skip and count invalid prompt lines instead of stopping at the first.") var skipInvalid = false
    @Flag(inversion: .prefixedNo,
          help: "Put <|endoftext|> first in every prompt, as TransformerLens's to_tokens and `lnlens patch` do (default with --prompts; --no-prepend-bos: the prompts as they are; text windows are always cut from the text as it is).")
    var prependBos: Bool?
    @Option(help: "SQLite database to store the runs in.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue an interrupted run (one --model, same prompts and options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @Option(help: "Prompts per forward pass.") var batchSize = 32
    @Option(help: "Prompts stored per transaction (the unit an interrupted run resumes from).") var chunkSize = 64
    @Option(help: "Heads listed by |direct effect| in the summary.") var top = 8
    @Option(help: ArgumentHelp("Task check (prompt sets with wrong): the model does the task when its mean |clean − corrupt| logit difference (without corrupt prompts: its mean clean one) is at least this; prompts below it are named.",
                               valueName: "logits"))
    var minGap = TaskCheck.defaultMinGap
    @Option(help: ArgumentHelp("How the NMAE's 95% intervals resample: crossed (heads and prompts independently, as the paper) or pairs ((prompt, head) pairs).",
                               valueName: "crossed|pairs"))
    var bootstrap = BootstrapScheme.crossed.rawValue
    @OptionGroup var sharding: ShardOption
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON (every row).") var json = false
    @Flag(help: "Print CSV (every row).") var csv = false

    func validate() throws {
        if (prompts == nil) == (text == nil) { throw ValidationError("give exactly one of --prompts FILE.jsonl or --text FILE.txt") }
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if resume != nil && models.count > 1 { throw ValidationError("--resume continues one run: give the one --model it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if prompts != nil && (maxTokens != nil) { throw ValidationError("--max-tokens goes with --text") }
        if text != nil && prependBos == true { throw ValidationError("--prepend-bos goes with --prompts (text windows are cut from the text as it is)") }
        if text != nil && skipInvalid { throw ValidationError("--skip-invalid goes with --prompts") }
        if top < 0 { throw ValidationError("--top must not be negative") }
        if !(minGap >= 0 && minGap.isFinite) { throw ValidationError("--min-gap \(minGap): give a number of logits ≥ 0, e.g. 0.5") }
        if BootstrapScheme(rawValue: bootstrap) == nil { throw ValidationError("--bootstrap \(bootstrap): use crossed or pairs") }
        guard let t = TextTargets(rawValue: targets) else { throw ValidationError("--targets \(targets): use next-token or paper") }
        if prompts != nil && t != .nextToken { throw ValidationError("--targets goes with --text") }
    }

    /// Every option of this invocation, as stored with the run (`context` as actually used).
    func options(context effectiveContext: Int, shard: Shard?) -> [String: Any] {
        var o: [String: Any] = ["models": modelSpecs.joined(separator: ","), "db": db, "batch_size": batchSize, "chunk_size": chunkSize,
                                "skip_invalid": skipInvalid, "prepend_bos": bos, "processing": processing.stored]
        if let prompts { o["prompts"] = prompts }
        if let shard { o["shard"] = shard.description }
        if let text {
            o["text"] = text; o["context"] = effectiveContext; o["max_tokens"] = maxTokens.map { $0 as Any } ?? "all"
            o["targets"] = targets
        }
        return o
    }

    /// Whether the prompts get `<|endoftext|>` first: yes unless --no-prepend-bos; never in text mode.
    var bos: Bool { prependBos ?? (text == nil) }

    var modelSpecs: [String] {
        models.isEmpty ? (resume == nil ? [EmbeddedModels.defaultName, EmbeddedModels.lnFreeName] : [EmbeddedModels.defaultName]) : models
    }

    func run() throws {
        let shard = try sharding.resolved()
        // Opened once the first model and its inputs have passed their checks: a bad prompt
        // file must not leave a new, empty database behind.
        var opened: ResultsDatabase?
        func store() throws -> ResultsDatabase {
            if let opened { return opened }
            opened = try ResultsDatabase(path: db)
            return opened!
        }
        var runIDs: [Int64] = []
        for spec in modelSpecs {
            let loaded = try LoadedModel.load(spec, processing: processing.options)
            let tok = try loaded.requireTokenizer()
            let input: AttributionInput
            let effectiveContext = min(context, loaded.model.config.nCtx)
            if text != nil && effectiveContext < context {
                printErr("note: --context \(context) is longer than \(spec)'s n_positions; using \(effectiveContext)")
            }
            if let prompts {
                input = .prompts(try loadPromptSet(prompts, model: loaded, skipInvalid: skipInvalid, prependBOS: bos))
            } else {
                input = .text(try TextPrompts.load(url: URL(fileURLWithPath: EmbeddedPrompts.resolve(text!)), tokenizer: tok,
                                                   context: effectiveContext, maxTokens: maxTokens),
                              TextTargets(rawValue: targets)!)
            }
            var runner = DLAJob(model: loaded.model, modelPath: loaded.checkpoint.directory.path,
                                   modelHash: try loaded.weightsHash(), input: input,
                                   decode: { tok.decode($0) },
                                   optionsJSON: RunOptions.json(options(context: effectiveContext, shard: shard)),
                                   toolVersion: LNLensVersion.string)
            runner.batchSize = batchSize
            runner.chunkSize = chunkSize
            runner.forceResume = forceResume
            runner.shard = shard
            runner.minGap = minGap
            runner.bootstrap = BootstrapScheme(rawValue: bootstrap)!
            let id = try ProgressLine.run(label: spec, unit: runner.unit) {
                try runner.run(db: try store(), resume: resume, progress: $0, phase: $1)
            }
            runIDs.append(id)
        }
        let database = try store()
        let reading = ProgressLine(label: "dla", unit: "runs")
        reading.phase("reading \(runIDs.count == 1 ? "the run" : "the \(runIDs.count) runs") back from \(db)")
        let reports = try runIDs.map { try RunReport(db: database, runID: $0) }
        reading.finish()
        for r in reports { if let w = r.task?.warning(model: r.modelName) { printErr("lnlens: warning: " + w) } }
        if json {
            try printJSON(["runs": reports])
        } else if csv {
            print("run_id,model,model_name,ln_mode,prompt,component,site,layer,pos,head,dla,direct_effect")
            for r in reports {
                for row in r.rows {
                    let s = RunReport.Row(row)
                    func i(_ v: Int?) -> String { v.map(String.init) ?? "" }
                    print("\(r.runID),\(csvField(r.model)),\(csvField(r.modelName)),\(r.lnMode),\(row.prompt),\(row.component),"
                          + "\(s.site),\(i(s.layer)),,\(i(s.head)),\(row.dla),\(row.directEffect)")
                }
            }
        } else {
            for r in reports { r.printSummary(top: top) }
            if reports.count > 1 { RunReport.printSideBySide(reports) }
            if let shard {
                print("stored in \(db) as shard \(shard) (run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", "))); once all \(shard.count) shards are done, combine them with: lnlens merge OUT.sqlite SHARD.sqlite…")
            } else {
                print("stored in \(db) as run\(runIDs.count > 1 ? "s" : "") \(runIDs.map(String.init).joined(separator: ", "))"
                      + (runIDs.count == 2 ? "; compare them with: lnlens diff \(runIDs[0]) \(runIDs[1]) --db \(db)" : ""))
            }
        }
    }
}

/// One stored dla run, read back from the database for printing.
struct RunReport: Encodable {
    let runID: Int64
    let model: String
    let lnMode: String
    let nPrompts: Int
    /// `I/N` of a shard run (not printed in JSON: a merged run reads back like an unsharded one).
    let shard: String?
    let nmaeHeadsGlobal: Double
    let nmaePerHead: [String: Double]
    let nmaePerLayer: [String: Double]
    let componentsSumMaxAbsError: Double
    let rows: [ComponentAttribution]
    /// The 95% interval of `nmaeHeadsGlobal` and how it was resampled (nil when not stored).
    let nmaeHeadsGlobalCI: ConfidenceInterval?
    let bootstrap: String
    /// The run's task check (`StoredRuns.taskCheck`; nil for text input and prompts without wrong).
    let task: TaskCheck?
    /// What `nPrompts` counts: prompts, text positions (`--text`) or windows (`--targets paper`).
    let unit: String

    /// One row of `--json`: the component by name and as the database keys it (`site`, `layer`,
    /// `head`; `pos` null: DLA attributes the final residual stream at the target position).
    struct Row: Encodable {
        let prompt: Int, component: String, site: String, layer: Int?, pos: Int?, head: Int?
        let dla: Double, directEffect: Double
        enum CodingKeys: String, CodingKey { case prompt, component, site, layer, pos, head, dla, directEffect = "direct_effect" }

        init(_ a: ComponentAttribution) {
            let site = a.component.site
            (prompt, component, self.site, layer, pos, head) = (a.prompt, a.component.description, site.name, site.layer, nil, site.head)
            (dla, directEffect) = (a.dla, a.directEffect)
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(component, forKey: .component)
            try c.encode(site, forKey: .site)
            try c.encode(layer, forKey: .layer)  // null, not absent, like the database's NULL
            try c.encode(pos, forKey: .pos)
            try c.encode(head, forKey: .head)
            try c.encode(dla, forKey: .dla)
            try c.encode(directEffect, forKey: .directEffect)
        }
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", model, modelName = "model_name", lnMode = "ln_mode", nPrompts = "n_prompts", task
        case nmaeHeadsGlobal = "nmae_heads_global", nmaePerHead = "nmae_per_head", nmaePerLayer = "nmae_per_layer"
        case nmaeHeadsGlobalCI = "nmae_heads_global_ci", bootstrap
        case componentsSumMaxAbsError = "components_sum_max_abs_error", rows
    }

    /// JSON with an undefined number (NMAE when every direct effect is 0) as null, not a string.
    func encode(to encoder: Encoder) throws {
        func finite(_ x: Double) -> Double? { x.isFinite ? x : nil }
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runID, forKey: .runID)
        try c.encode(model, forKey: .model)
        try c.encode(modelName, forKey: .modelName)
        try c.encode(lnMode, forKey: .lnMode)
        try c.encode(nPrompts, forKey: .nPrompts)
        try c.encode(task, forKey: .task)
        try c.encode(nmaeHeadsGlobalCI.map { [finite($0.low), finite($0.high)] }, forKey: .nmaeHeadsGlobalCI)
        try c.encode(bootstrap, forKey: .bootstrap)
        try c.encode(finite(nmaeHeadsGlobal), forKey: .nmaeHeadsGlobal)
        try c.encode(nmaePerHead.mapValues(finite), forKey: .nmaePerHead)
        try c.encode(nmaePerLayer.mapValues(finite), forKey: .nmaePerLayer)
        try c.encode(finite(componentsSumMaxAbsError), forKey: .componentsSumMaxAbsError)
        try c.encode(rows.map(Row.init), forKey: .rows)
    }

    init(db: ResultsDatabase, runID: Int64) throws {
        guard let run = try db.run(id: runID) else { throw CLIError.usage("no run \(runID) in \(db.path)") }
        self.runID = runID
        model = run.modelPath
        lnMode = run.lnMode
        nPrompts = run.nPrompts
        shard = run.shardLabel
        let summaries = try db.summaries(runID: runID)
        func pick(_ scope: String) -> [String: Double] {
            Dictionary(uniqueKeysWithValues: summaries.filter { $0.scope == scope && $0.metric == StoreName.nmae }.map { ($0.key, $0.value) })
        }
        nmaeHeadsGlobal = pick(StoreName.scopeHeads)["all"] ?? .nan
        nmaePerHead = pick(StoreName.scopeHead)
        nmaePerLayer = pick(StoreName.scopeLayer)
        componentsSumMaxAbsError = summaries.first { $0.scope == StoreName.scopeCheck }?.value ?? .nan
        rows = try StoredRuns.attributions(db: db, runID: runID)
        func global(_ metric: String) -> Double? {
            summaries.first { $0.scope == StoreName.scopeHeads && $0.key == "all" && $0.metric == metric }?.value
        }
        nmaeHeadsGlobalCI = global(StoreName.nmaeCILow).flatMap { low in global(StoreName.nmaeCIHigh).map { ConfidenceInterval(low: low, high: $0) } }
        bootstrap = DLAJob.settings(optionsJSON: run.optionsJSON).bootstrap.rawValue
        task = try StoredRuns.taskCheck(db: db, run: run)
        let options = RunOptions.object(run.optionsJSON)
        unit = options["text"] == nil ? "prompts" : (options["targets"] as? String == TextTargets.lastTokenOfWindow.rawValue ? "windows" : "positions")
    }

    var modelName: String { ModelPath.shortName(model) }

    func printSummary(top: Int) {
        let covered = Set(rows.map(\.prompt)).count
        print("\(modelName) (\(lnMode)) — run \(runID), " + (shard.map { "shard \($0): \(covered) of \(nPrompts) \(unit)" } ?? "\(nPrompts) \(unit)"))
        if let task { print("  " + task.line() + (task.passed == false ? " — TASK CHECK FAILED" : "")) }
        print("  DLA vs exact direct effect, NMAE over heads: \(nmaeText(nmaeHeadsGlobal)) %"
              + (nmaeHeadsGlobalCI.map { " (95 % CI \(nmaeText($0.low))–\(nmaeText($0.high)), \(bootstrap) bootstrap)" } ?? ""))
        print("  per layer: " + nmaePerLayer.sorted { layerKey($0.key) < layerKey($1.key) }
            .map { "\($0.key) \(nmaeText($0.value)) %" }.joined(separator: "  "))
        print(String(format: "  components sum to the final residual stream: max |error| %.2e", componentsSumMaxAbsError))
        // Heads by mean |direct effect| over prompts (as `lnlens query top-heads`).
        print("  heads with the largest direct effects (mean |DE| over \(unit)):")
        print("    head     mean |DE|    mean DE    mean DLA     NMAE %")
        for h in HeadEffect.ranked(rows).prefix(top) {
            print("    " + padded(h.component.description, 7) + String(format: " %9.4f  %9.4f   %9.4f  ", h.meanAbsDE, h.meanDE, h.meanDLA)
                  + rightAligned(nmaeText(nmaePerHead[h.component.description]), 9))
        }
        printGrid()
        print("")
    }

    /// Layer × head grid of per-head NMAE, shaded so the eye finds the bad heads.
    func printGrid() {
        let heads = nmaePerHead.keys.compactMap { key -> (Int, Int)? in
            if case let .head(l, h)? = HeadSet(key: key) { return (l, h) }
            return nil
        }
        let layers = Set(heads.map(\.0)).sorted()
        let nHeads = (heads.map(\.1).max() ?? -1) + 1
        guard !layers.isEmpty, nHeads > 0 else { return }
        print("  per-head NMAE % (layer × head; ░ < 1, ▒ < 10, ▓ < 50, █ ≥ 50):")
        print("        " + (0..<nHeads).map { h in
            let label = "H\(h)"
            return String(repeating: " ", count: max(0, 7 - label.count)) + label
        }.joined())
        for l in layers {
            var line = "    " + padded("L\(l)", 3) + " "
            for h in 0..<nHeads {
                guard let v = nmaePerHead[HeadSet.head(layer: l, head: h).description] else { line += "      -"; continue }
                let shade = v < 1 ? "░" : v < 10 ? "▒" : v < 50 ? "▓" : "█"
                line += " " + shade + rightAligned(nmaeText(v, compact: true), 5)
            }
            print(line)
        }
    }

    static func printSideBySide(_ reports: [RunReport]) {
        let width = max(14, reports.map { $0.modelName.count }.max()! + 2)
        func cell(_ s: String) -> String { s.padding(toLength: width, withPad: " ", startingAt: 0) }
        print("side by side (NMAE %, DLA vs exact direct effect):")
        print(cell("") + reports.map { cell($0.modelName) }.joined())
        print(cell("ln mode") + reports.map { cell($0.lnMode) }.joined())
        print(cell("run") + reports.map { cell("\($0.runID)") }.joined())
        if reports.contains(where: { $0.task != nil }) {
            print(cell("task check") + reports.map { cell($0.task.map { $0.passed == false ? "FAILED" : "passed" } ?? "-") }.joined())
        }
        print(cell("heads (all)") + reports.map { cell(nmaeText($0.nmaeHeadsGlobal)) }.joined())
        let layers = Set(reports.flatMap { $0.nmaePerLayer.keys }).sorted { layerKey($0) < layerKey($1) }
        for l in layers {
            print(cell(l) + reports.map { cell(nmaeText($0.nmaePerLayer[l])) }.joined())
        }
    }
}

/// `L12` → 12, for sorting layer keys numerically.
private func layerKey(_ s: String) -> Int {
    if case let .layer(l)? = HeadSet(key: s) { return l }
    return 0
}

/// `s` padded with spaces on the right to `width` (Foundation's `%-7@` does not pad on Linux).
func padded(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// An NMAE (%) as the CLI prints it everywhere: 4 decimals from 0.01 up, below that 3 significant
/// digits in exponent form, so that the LN-free model's 8.2e-13 % is not printed as 0.0000 %
/// (exactly 0 stays 0.0000); "-" when undefined. `compact` (the per-head grid's cells, 5
/// characters): 1 decimal from 0.1 up, else 1 significant digit (`8e-13`), `>999` above 999.
func nmaeText(_ value: Double?, compact: Bool = false) -> String {
    guard let v = value, v.isFinite else { return "-" }
    if compact {
        if v >= 999.95 { return ">999" }
        return abs(v) >= 0.1 || v == 0 ? String(format: "%.1f", v) : String(format: "%.0e", v)
    }
    return abs(v) >= 0.01 || v == 0 ? String(format: "%.4f", v) : String(format: "%.2e", v)
}

/// `s` padded with spaces on the left to `width` (numbers in table columns).
func rightAligned(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

/// Quotes a CSV field when it needs it.
func csvField(_ s: String) -> String {
    s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}

/// Ctrl-C during a run: the first stops it cleanly after the chunk being stored (the run is
/// marked interrupted and can be resumed); a second one ends the process at once.
enum Interrupt {
    nonisolated(unsafe) static var flag: sig_atomic_t = 0
    static var requested: Bool { flag != 0 }

    static func install() {
        // A parent may have started lnlens with SIGINT blocked (the mask is inherited: test
        // runners, some job launchers); then Ctrl-C would stay pending and never stop the run.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        signal(SIGINT) { _ in
            Interrupt.flag = 1
            signal(SIGINT, SIG_DFL)
        }
    }
}

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
    @Option(help: ArgumentHelp("JSON Lines, one row per line: each row's first --context tokens are one window, as the paper's DLA on the Pile (rows shorter than --context are skipped and counted).",
                               valueName: "rows.jsonl"))
    var dataset: String?
    @Option(help: ArgumentHelp("With --dataset: the rows' key holding the text (a string) or the token ids (an array) (default: text).", valueName: "key"))
    var field: String?
    @Option(help: "With --dataset: read only the first N rows (the paper: 1000).") var rows: Int?
    @Option(help: "Text mode: at most this many predicted positions.") var maxTokens: Int?
    @Option(help: "Text and dataset mode: window length in tokens (the paper's DLA: 512).") var context = 128
    @Option(help: ArgumentHelp("Text and dataset mode: next-token (every position, its actual next token; --text's default) or paper (the last position of each window, to the token there, as the paper's code does; --dataset's default).", valueName: "next-token|paper"))
    var targets: String?
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
        if [prompts, text, dataset].compactMap({ $0 }).count != 1 {
            throw ValidationError("give exactly one of --prompts FILE.jsonl, --text FILE.txt or --dataset ROWS.jsonl")
        }
        if dataset == nil && (field != nil || rows != nil) { throw ValidationError("--field and --rows go with --dataset") }
        if let rows, rows < 1 { throw ValidationError("--rows must be at least 1") }
        if let field, field.isEmpty { throw ValidationError("--field: give the rows' key, e.g. text") }
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if resume != nil && models.count > 1 { throw ValidationError("--resume continues one run: give the one --model it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if text == nil && maxTokens != nil { throw ValidationError("--max-tokens goes with --text") }
        if prompts == nil && prependBos == true { throw ValidationError("--prepend-bos goes with --prompts (text and dataset windows are cut as they are)") }
        if prompts == nil && skipInvalid { throw ValidationError("--skip-invalid goes with --prompts") }
        if top < 0 { throw ValidationError("--top must not be negative") }
        if !(minGap >= 0 && minGap.isFinite) { throw ValidationError("--min-gap \(minGap): give a number of logits ≥ 0, e.g. 0.5") }
        if BootstrapScheme(rawValue: bootstrap) == nil { throw ValidationError("--bootstrap \(bootstrap): use crossed or pairs") }
        if let targets {
            guard TextTargets(rawValue: targets) != nil else { throw ValidationError("--targets \(targets): use next-token or paper") }
            if prompts != nil && targets != TextTargets.nextToken.rawValue { throw ValidationError("--targets goes with --text or --dataset") }
        }
    }

    /// `--targets`, or the mode's default: paper for --dataset, next-token otherwise.
    var textTargets: TextTargets {
        targets.flatMap(TextTargets.init(rawValue:)) ?? (dataset != nil ? .lastTokenOfWindow : .nextToken)
    }

    /// Every option of this invocation, as stored with the run (`context` as actually used,
    /// `skippedRows` of a dataset).
    func options(context effectiveContext: Int, skippedRows: Int?, shard: Shard?) -> DLAOptions {
        var o = DLAOptions()
        (o.record.models, o.record.db, o.record.processing) = (modelSpecs.joined(separator: ","), db, processing.stored)
        (o.computation.batchSize, o.computation.chunkSize) = (batchSize, chunkSize)
        (o.computation.skipInvalid, o.computation.prependBOS) = (skipInvalid, bos)
        (o.computation.minGap, o.computation.bootstrap) = (minGap, bootstrap)
        (o.record.prompts, o.record.shard) = (prompts, shard?.description)
        if let text {
            (o.record.text, o.computation.context, o.computation.targets) = (text, effectiveContext, textTargets.rawValue)
            o.computation.maxTokens = TokenLimit(maxTokens)
        }
        if let dataset {
            (o.record.dataset, o.record.skippedRows) = (dataset, skippedRows)
            (o.computation.context, o.computation.targets) = (effectiveContext, textTargets.rawValue)
            (o.computation.field, o.computation.rows) = (field ?? "text", rows)
        }
        return o
    }

    /// Whether the prompts get `<|endoftext|>` first: yes unless --no-prepend-bos; never in text mode.
    var bos: Bool { prependBos ?? (text == nil) }

    var modelSpecs: [String] {
        models.isEmpty ? (resume == nil ? [EmbeddedModels.defaultName, EmbeddedModels.lnFreeName] : [EmbeddedModels.defaultName]) : models
    }

    /// The input of one model: the prompt set, the text's windows (`context` cut to the model's),
    /// or the first `context` tokens of each dataset row (and how many rows were skipped).
    func input(for loaded: LoadedModel, spec: String) throws -> (input: AttributionInput, context: Int, skippedRows: Int?) {
        let effectiveContext = min(context, loaded.model.config.nCtx)
        if prompts == nil && effectiveContext < context {
            printErr("note: --context \(context) is longer than \(spec)'s n_positions; using \(effectiveContext)")
        }
        if let prompts {
            return (.prompts(try loadPromptSet(prompts, model: loaded, skipInvalid: skipInvalid, prependBOS: bos)), effectiveContext, nil)
        }
        if let dataset {
            let rows = try JSONLDataset.load(URL(fileURLWithPath: dataset), field: field ?? "text", limit: rows)
            let windows = try TextPrompts.firstTokens(of: rows, context: effectiveContext, tokenizer: try loaded.requireTokenizer(),
                                                      vocabSize: loaded.model.config.dVocab)
            return (.text(windows, textTargets), effectiveContext, windows.skippedLines.count)
        }
        let windows = try TextPrompts.load(url: URL(fileURLWithPath: EmbeddedPrompts.resolve(text!)), tokenizer: try loaded.requireTokenizer(),
                                           context: effectiveContext, maxTokens: maxTokens)
        return (.text(windows, textTargets), effectiveContext, nil)
    }

    /// The note on a dataset's rows shorter than the context, skipped (nil: none were).
    static func skippedNote(_ input: AttributionInput, context: Int) -> String? {
        guard case .text(let w, _) = input, let rows = w.rows, !w.skippedLines.isEmpty else { return nil }
        let lines = w.skippedLines.prefix(5).map(String.init).joined(separator: ", ") + (w.skippedLines.count > 5 ? ", …" : "")
        return "note: \(w.path): \(w.skippedLines.count) of \(rows) rows are shorter than \(context) tokens and were skipped "
            + "(line\(w.skippedLines.count == 1 ? "" : "s") \(lines)); \(w.windows.count) rows attributed"
    }

    func run() throws {
        let shard = try sharding.resolved()
        let store = LazyDatabase(path: db)
        var runIDs: [Int64] = []
        for spec in modelSpecs {
            let loaded = try LoadedModel.load(spec, processing: processing.options)
            let tok = try loaded.requireTokenizer()
            let (input, effectiveContext, skipped) = try input(for: loaded, spec: spec)
            var job = DLAJob(model: loaded.model, modelPath: loaded.checkpoint.directory.path, modelHash: try loaded.weightsHash(),
                             input: input, decode: { tok.decode($0) },
                             options: options(context: effectiveContext, skippedRows: skipped, shard: shard),
                             toolVersion: LNLensVersion.string)
            (job.forceResume, job.shard) = (forceResume, shard)
            runIDs.append(try ProgressLine.run(label: spec, unit: job.unit) {
                try job.run(db: try store.open(), resume: resume, progress: $0, phase: $1)
            })
            if let note = Self.skippedNote(input, context: effectiveContext) { printErr(note) }
        }
        let reports = try store.readBack(runIDs, label: "dla") { try DLARunReport(db: $0, runID: $1) }
        for r in reports { if let w = r.task?.warning(model: r.modelName) { printErr("lnlens: warning: " + w) } }
        if json { return try printJSON(["runs": reports]) }
        if csv { return DLARunReport.printCSV(reports) }
        for r in reports { r.printSummary(top: top) }
        if reports.count > 1 { DLARunReport.printSideBySide(reports) }
        printStored(runIDs, db: db, shard: shard)
    }
}

extension DLARunReport {
    /// `--csv`: every row of every run.
    static func printCSV(_ reports: [DLARunReport]) {
        print("run_id,model,model_name,ln_mode,prompt,component,site,layer,pos,head,dla,direct_effect")
        for r in reports {
            for row in r.rows {
                let s = DLARunReport.Row(row)
                func i(_ v: Int?) -> String { v.map(String.init) ?? "" }
                print("\(r.runID),\(csvField(r.model)),\(csvField(r.modelName)),\(r.lnMode),\(row.prompt),\(row.component),"
                      + "\(s.site),\(i(s.layer)),,\(i(s.head)),\(row.dla),\(row.directEffect)")
            }
        }
    }
}

extension DLARunReport {
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

    static func printSideBySide(_ reports: [DLARunReport]) {
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

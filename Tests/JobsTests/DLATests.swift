import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing
import Tokenizer

/// DLA and exact direct effect against TransformerLens 2.16.1, computed as the paper's code does
/// (scripts/reference/make_models_and_fixtures.py, fixtures under Tests/Fixtures/reference/dla/).
@Suite struct DLATests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let repo = fixtures.deletingLastPathComponent().deletingLastPathComponent()

    struct Reference: Decodable {
        let rows: [ComponentAttribution]
        let nmaeHeadsGlobal: Double
        let nmaePerHead: [String: Double]
        let nmaePerLayer: [String: Double]
        enum CodingKeys: String, CodingKey {
            case rows, nmaeHeadsGlobal = "nmae_heads_global", nmaePerHead = "nmae_per_head", nmaePerLayer = "nmae_per_layer"
        }
    }

    static func tokenizer() throws -> GPT2Tokenizer {
        try GPT2Tokenizer.load(directory: repo.appendingPathComponent("models/tokenizer"))
    }

    /// Runs the whole `dla` job (batching, storage, summaries) on an in-memory database.
    /// A runner over the fixture prompts: batches of 3 (several per length, more than one
    /// length) stored in chunks of 4.
    static func runner(model name: String, options: DLAOptions = DLAOptions()) throws -> DLAJob {
        let checkpoint = try Checkpoint.open(fixtures.appendingPathComponent("models/\(name)").path)
        let model = try GPT2Model(checkpoint: checkpoint)
        let tok = try tokenizer()
        let set = try PromptSet.load(url: fixtures.appendingPathComponent("reference/dla/prompts.jsonl"),
                                     tokenizer: tok, skipInvalid: false)
        var runner = DLAJob(model: model, modelPath: checkpoint.directory.path, modelHash: try checkpoint.weightsHash(),
                               input: .prompts(set), decode: { tok.decode($0) }, options: options,
                               toolVersion: "test")
        runner.batchSize = 3
        runner.chunkSize = 4
        return runner
    }

    static func storedRun(model name: String) throws -> (ResultsDatabase, Int64) {
        let db = try ResultsDatabase.inMemory()
        return (db, try runner(model: name).run(db: db))
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func rowsAndNMAEMatchTransformerLens(model name: String) throws {
        let ref = try JSONDecoder().decode(
            Reference.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("reference/dla/\(name).json")))
        let (db, id) = try Self.storedRun(model: name)
        let rows = DLAJob.attributions(from: try db.results(runID: id))
        let got = Dictionary(uniqueKeysWithValues: rows.map { ("\($0.prompt)|\($0.component)", $0) })
        #expect(rows.count == ref.rows.count)
        var worstDLA = 0.0, worstDE = 0.0
        for r in ref.rows {
            let g = try #require(got["\(r.prompt)|\(r.component)"], "no row for prompt \(r.prompt) \(r.component)")
            worstDLA = max(worstDLA, abs(g.dla - r.dla))
            worstDE = max(worstDE, abs(g.directEffect - r.directEffect))
        }
        print("\(name): max |DLA diff| \(worstDLA), max |DE diff| \(worstDE) over \(ref.rows.count) rows")
        #expect(worstDLA <= 1e-4)
        #expect(worstDE <= 1e-4)

        let summaries = try db.summaries(runID: id)
        func stored(_ scope: String, _ key: String) -> Double? {
            summaries.first { $0.scope == scope && $0.key == key && $0.metric == StoreName.nmae }?.value
        }
        let global = try #require(stored(StoreName.scopeHeads, "all"))
        print("\(name): NMAE heads \(global) % (TransformerLens \(ref.nmaeHeadsGlobal) %)")
        #expect(abs(global - ref.nmaeHeadsGlobal) <= 0.01)
        for (head, value) in ref.nmaePerHead {
            #expect(abs((stored(StoreName.scopeHead, head) ?? .nan) - value) <= 0.01, "\(head)")
        }
        for (layer, value) in ref.nmaePerLayer {
            #expect(abs((stored(StoreName.scopeLayer, layer) ?? .nan) - value) <= 0.01, "\(layer)")
        }
        if name == "tiny-lnfree" { #expect(global < 1e-3) } else { #expect(global > 1) }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func componentsSumToTheFinalResidualStream(model name: String) throws {
        let (db, id) = try Self.storedRun(model: name)
        let check = try #require(try db.summaries(runID: id).first { $0.scope == StoreName.scopeCheck })
        print("\(name): components sum max |error| \(check.value)")
        #expect(check.value < 1e-4)
        let perPrompt = try db.results(runID: id, quantity: StoreName.componentsSumError)
        #expect(perPrompt.count == 8)
    }

    /// A finished run stores the bootstrap 95% interval of its NMAE over all heads, per layer and
    /// per head (crossed: heads and prompts resampled independently), recomputable from its rows.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func storesBootstrapIntervals(model name: String) throws {
        let (db, id) = try Self.storedRun(model: name)
        let summaries = try db.summaries(runID: id)
        func value(_ scope: String, _ key: String, _ metric: String) throws -> Double {
            try #require(summaries.first { $0.scope == scope && $0.key == key && $0.metric == metric }?.value,
                         "no \(scope)/\(key)/\(metric)")
        }
        let rows = DLAJob.attributions(from: try db.results(runID: id))
        let expected = NMAEIntervals(rows: rows)
        let keys: [(String, HeadSet, ConfidenceInterval)] = [(StoreName.scopeHeads, .all, expected.headsGlobal)]
            + expected.perLayer.sorted { $0.key < $1.key }.map { (StoreName.scopeLayer, .layer($0.key), $0.value) }
            + expected.perHead.sorted { $0.key < $1.key }.map { (StoreName.scopeHead, HeadSet(key: $0.key.description)!, $0.value) }
        #expect(keys.count == 1 + 2 + 8)
        for (scope, heads, ci) in keys {
            let key = heads.description
            let low = try value(scope, key, StoreName.nmaeCILow), high = try value(scope, key, StoreName.nmaeCIHigh)
            let nmae = try value(scope, key, StoreName.nmae)
            #expect(low == ci.low && high == ci.high)
            #expect(low <= nmae && nmae <= high, "\(scope)/\(key): \(low) \(nmae) \(high)")
        }
        #expect(try db.run(id: id)?.optionsJSON.contains("\"bootstrap\":\"crossed\"") == true)
    }

    /// For the LN-free model DLA and the direct effect are one linear function: equal to float error.
    @Test func lnFreeDLAEqualsDirectEffect() throws {
        let (db, id) = try Self.storedRun(model: "tiny-lnfree")
        let rows = DLAJob.attributions(from: try db.results(runID: id))
        let worst = rows.map { abs($0.dla - $0.directEffect) }.max() ?? .infinity
        #expect(worst < 1e-9, "max |DLA − DE| \(worst)")
    }

    /// Batch size (here forced to 1 by a tiny activation budget) does not change the numbers.
    @Test func resultsDoNotDependOnBatching() throws {
        let (db, id) = try Self.storedRun(model: "tiny-ln")
        let batched = try db.results(runID: id)
        var runner = try Self.runner(model: "tiny-ln")
        runner.memoryBudget = 1
        #expect(runner.effectiveBatchSize(length: 14) == 1)
        let single = try ResultsDatabase.inMemory()
        let singleID = try runner.run(db: single)
        let one = try single.results(runID: singleID)
        #expect(one.count == batched.count)
        let worst = zip(one, batched).map {
            ($0.site, $0.layer, $0.head, $0.quantity) == ($1.site, $1.layer, $1.head, $1.quantity) ? abs($0.value - $1.value) : .infinity
        }.max()!
        #expect(worst < 1e-5, "max |diff| \(worst)")
    }

    /// A run resumes only with the options that change its numbers unchanged.
    @Test func resumeRefusesChangedOptions() throws {
        func runner(prependBOS: Bool, db: String) throws -> DLAJob {
            var options = DLAOptions()
            (options.computation.prependBOS, options.record.db) = (prependBOS, db)
            return try Self.runner(model: "tiny-ln", options: options)
        }
        let db = try ResultsDatabase.inMemory()
        #expect(throws: JobError.interrupted(runID: 1, done: 4, total: 8, unit: "prompts", resume: "--resume 1")) {
            try runner(prependBOS: false, db: "a").run(db: db) { done, _ in
                if done >= 4 { throw JobStop() }
            }
        }
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its option prepend_bos is false but this invocation has true")) {
            try runner(prependBOS: true, db: "a").run(db: db, resume: 1)
        }
        var batched = try runner(prependBOS: false, db: "a")
        batched.batchSize = 8
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its option batch_size is 3 but this invocation has 8")) {
            try batched.run(db: db, resume: 1)
        }
        // Options that do not change the numbers (here the database path) may differ.
        #expect(try runner(prependBOS: false, db: "b").run(db: db, resume: 1) == 1)
        #expect(try db.run(id: 1)?.status == .completed)
    }

    /// The run `job` records, with `optionsJSON` as its options.
    static func record(_ job: DLAJob, optionsJSON: String, shard: Shard? = nil) throws -> RunRecord {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return RunRecord(command: StoreName.dlaCommand, optionsJSON: optionsJSON, modelPath: job.modelPath, modelHash: job.modelHash,
                         lnMode: job.model.lnMode.rawValue,
                         processingJSON: String(decoding: try encoder.encode(job.model.processing), as: UTF8.self),
                         promptSetPath: job.input.path, promptSetHash: job.input.contentHash, nPrompts: job.input.count,
                         toolVersion: job.toolVersion, shard: shard.map { ($0.index, $0.count) })
    }

    /// Options are compared by value, not by how they were stored: a run recorded with strings
    /// (as lnlens wrote them before schema v3) resumes with the same values given as JSON numbers
    /// and booleans, and is refused with another value, named as the user wrote it (a JSON
    /// `true` is not shown as Foundation's "1").
    @Test func resumeComparesOptionsByValue() throws {
        func runner(prependBOS: Bool) throws -> DLAJob {
            var options = DLAOptions()
            (options.computation.prependBOS, options.computation.skipInvalid) = (prependBOS, false)
            return try Self.runner(model: "tiny-ln", options: options)
        }
        let db = try ResultsDatabase.inMemory()
        let old = #"{"prepend_bos": "true", "skip_invalid": "false", "batch_size": "3.0", "chunk_size": "4", "db": "a", "min_gap": "0.5", "bootstrap": "crossed"}"#
        #expect(try db.beginRun(try Self.record(try runner(prependBOS: true), optionsJSON: old)) == 1)
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its option prepend_bos is true but this invocation has false")) {
            try runner(prependBOS: false).run(db: db, resume: 1)
        }
        var batched = try runner(prependBOS: true)
        batched.batchSize = 8
        #expect(throws: JobError.resumeMismatch(runID: 1, reason: "its option batch_size is 3 but this invocation has 8")) {
            try batched.run(db: db, resume: 1)
        }
        #expect(try runner(prependBOS: true).run(db: db, resume: 1) == 1)
        #expect(try db.run(id: 1)?.status == .completed)
        let (whole, id) = try Self.storedRun(model: "tiny-ln")
        #expect(try db.results(runID: 1) == whole.results(runID: id))
    }

    /// Prompts the model cannot run are errors naming the line, or skipped with --skip-invalid.
    @Test func promptsCheckedAgainstTheModel() throws {
        let tok = try Self.tokenizer()
        let set = try PromptSet.load(url: Self.fixtures.appendingPathComponent("reference/dla/prompts.jsonl"),
                                     tokenizer: tok, skipInvalid: false)
        let lengths = set.examples.map(\.tokens.count)
        let short = lengths.min()!
        #expect(throws: AnalysisError.invalidPrompt(path: set.path, line: set.examples.first { $0.tokens.count > short }!.line,
                                                    problem: .tooLong(tokens: lengths.max()!, nCtx: short))) {
            try set.checked(nCtx: short, dVocab: 50257, skipInvalid: false)
        }
        let kept = try set.checked(nCtx: short, dVocab: 50257, skipInvalid: true)
        #expect(kept.examples.count == lengths.filter { $0 == short }.count)
        #expect(kept.examples.map(\.index) == Array(0..<kept.examples.count))
        #expect(kept.skipped.count == lengths.filter { $0 > short }.count)
        let answer = set.examples[0].answerID
        #expect(throws: AnalysisError.self) { try set.checked(nCtx: 1024, dVocab: answer, skipInvalid: false) }
        let message = AnalysisError.invalidPrompt(path: "p.jsonl", line: 3, problem: .tokenOutsideVocabulary(id: 9, dVocab: 5))
            .errorDescription!
        #expect(message.hasPrefix("p.jsonl:3: token id 9") && !message.contains("\n"))
    }

    /// Text mode: every position to its next token, or (the paper's convention) the last position
    /// of each window to the token there.
    @Test func textTargets() throws {
        let tok = try Self.tokenizer()
        let text = try TextPrompts.load(url: Self.repo.appendingPathComponent("prompts/pride-and-prejudice.txt"),
                                        tokenizer: tok, context: 16, maxTokens: 100)
        let next = AttributionInput.text(text, .nextToken), paper = AttributionInput.text(text, .lastTokenOfWindow)
        #expect(next.count == 100 && next.units.flatMap(\.targets).count == 100)
        #expect(paper.count == text.windows.count)
        for (unit, window) in zip(paper.units, text.windows) {
            #expect(unit.targets.count == 1)
            #expect(unit.targets[0].position == window.tokens.count - 1)
            #expect(unit.targets[0].answerID == window.tokens.last)
        }
        let first = next.units[0].targets
        #expect(first.map(\.answerID) == Array(text.windows[0].tokens.dropFirst()))
        #expect(first.map(\.prompt) == Array(0..<first.count))
    }

    /// An interrupted run, resumed, ends with exactly the rows of an uninterrupted one.
    @Test func resumedRunStoresTheSameRows() throws {
        let (fullDB, fullID) = try Self.storedRun(model: "tiny-ln")
        let expected = try fullDB.results(runID: fullID)

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-resume-\(UUID()).sqlite").path
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        let runner = try Self.runner(model: "tiny-ln")
        // Interrupt after the first stored chunk.
        #expect(throws: JobError.interrupted(runID: 1, done: 4, total: 8, unit: "prompts", resume: "--resume 1")) {
            let db = try ResultsDatabase(path: path)
            _ = try runner.run(db: db) { done, _ in if done >= 4 { throw JobStop() } }
        }
        let db = try ResultsDatabase(path: path)
        let id = try #require(try db.runs().first?.id)
        #expect(try db.run(id: id)?.status == .interrupted)
        #expect(try db.completedPromptIndices(runID: id).count == 4)
        _ = try runner.run(db: db, resume: id)
        #expect(try db.run(id: id)?.status == .completed)
        #expect(try db.results(runID: id) == expected)
    }

    /// A database written by release 0.1.0 migrates and reads back identical DLA rows and summaries
    /// (the CSV files were exported from it by that release's `lnlens query`).
    @Test func v1DatabaseReadsIdenticalRows() throws {
        let store = Self.fixtures.appendingPathComponent("store")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-v1-\(UUID()).sqlite").path
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        try FileManager.default.copyItem(atPath: store.appendingPathComponent("v1.sqlite").path, toPath: path)
        let db = try ResultsDatabase(path: path)
        func csv(_ name: String) throws -> [[String]] {
            try String(contentsOf: store.appendingPathComponent(name), encoding: .utf8)
                .split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        }
        // results: run_id, prompt_index, component, quantity, value
        var expected: [Int64: [String: Double]] = [:]
        for row in try csv("v1.results.csv") {
            expected[Int64(row[0])!, default: [:]]["\(row[1])|\(row[2])|\(row[3])"] = Double(row[4])!
        }
        for id in Int64(1)...3 {
            var got: [String: Double] = [:]
            for a in try StoredRuns.attributions(db: db, runID: id) {
                got["\(a.prompt)|\(a.component)|dla"] = a.dla
                got["\(a.prompt)|\(a.component)|direct_effect"] = a.directEffect
            }
            for r in try db.results(runID: id, quantity: StoreName.componentsSumError) {
                got["\(r.promptIndex)|\(Component(site: r.site, layer: r.layer, head: r.head)!)|\(r.quantity)"] = r.value
            }
            #expect(got == expected[id]!, "run \(id)")
        }
        // summaries: run_id, scope, key, metric, value (bit-identical doubles)
        for row in try csv("v1.summaries.csv") {
            let stored = try db.summaries(runID: Int64(row[0])!).first { [$0.scope, $0.key, $0.metric] == Array(row[1...3]) }
            #expect(stored?.value == Double(row[4]), "\(row)")
        }
        #expect(try db.prompts(runID: 3).count == 20)
        let diff = try StoredRuns.dlaDiff(db: db, runA: 1, runB: 2, top: 3)
        #expect(diff.promptsCompared == 6 && (diff.b.headNMAE ?? 1) < 1e-6)
    }
}

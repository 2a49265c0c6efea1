import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing

/// The `edges` job on the test checkpoints: the rows it stores are the engine's (`edgeAttribution`,
/// `exactEdgeEffects`) bit for bit and hannamw/EAP-IG's within the fixtures' tolerance; top-K exact
/// edges; shards merged equal one run bit for bit; an interrupted run resumes to the same rows;
/// bad options store nothing.
@Suite struct EdgeJobTests {
    typealias Folder = ShardMergeTests.Folder
    static let fixtures = DLATests.fixtures

    struct Manifest: Decodable {
        struct Prompt: Decodable {
            let prompt: String, answer: String, wrong: String, corrupt: String
            let tokens: [Int], corrupt_tokens: [Int], answer_id: Int, wrong_id: Int
        }
        struct Tolerance: Decodable { let eap_rel: Double, exact_rel: Double }
        let prompts: [Prompt]
        let ig_steps: Int
        let tolerance: Tolerance
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/edges/manifest.json")))

    /// The fixture pairs as a prompt file (tokenized with BOS, as the fixtures were made).
    static func fixturePairs(in folder: Folder) throws -> PromptSet {
        let url = URL(fileURLWithPath: folder.path("pairs.jsonl"))
        let lines = try manifest.prompts.map {
            String(decoding: try JSONSerialization.data(withJSONObject: ["prompt": $0.prompt, "answer": $0.answer, "wrong": $0.wrong,
                                                                         "corrupt": $0.corrupt], options: [.sortedKeys]), as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        let set = try PromptSet.load(url: url, tokenizer: try DLATests.tokenizer(), skipInvalid: false, prependBOS: true)
        #expect(set.examples.map(\.tokens) == manifest.prompts.map(\.tokens))
        return set
    }

    /// Six IOI pairs of the shipped set (two lengths).
    static func ioiPairs(in folder: Folder) throws -> PromptSet {
        let repo = fixtures.deletingLastPathComponent().deletingLastPathComponent()
        let lines = try String(contentsOf: repo.appendingPathComponent("prompts/ioi.jsonl"), encoding: .utf8).split(separator: "\n").prefix(6)
        let url = URL(fileURLWithPath: folder.path("ioi6.jsonl"))
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return try PromptSet.load(url: url, tokenizer: try DLATests.tokenizer(), skipInvalid: false, prependBOS: true)
    }

    static func job(_ name: String, _ set: PromptSet, methods: [EdgeMethod] = [.eap, .eapIG], igSteps: Int = 5,
                    exact: ExactEdges = .all, chunkSize: Int = 1) throws -> EdgeJob {
        let checkpoint = try Checkpoint.open(fixtures.appendingPathComponent("models/\(name)").path)
        let tok = try DLATests.tokenizer()
        var job = EdgeJob(model: try GPT2Model(checkpoint: checkpoint), modelPath: checkpoint.directory.path,
                          modelHash: try checkpoint.weightsHash(), prompts: set, methods: methods, igSteps: igSteps, exact: exact,
                          tokenText: { tok.tokenString($0) }, toolVersion: "test")
        job.options.computation.chunkSize = chunkSize
        // The test checkpoints do not do IOI: keep every prompt in the NMAE.
        job.options.computation.minGap = 0
        return job
    }

    /// (upstream index, downstream index) of a stored row in the graph.
    static func index(_ r: EdgeRow, _ g: EdgeGraph) -> EdgeIndex {
        let down = r.downstream + (r.input.map { "<\($0)>" } ?? "")
        return EdgeIndex(u: g.upstream.firstIndex { $0.name == r.upstream }!, v: g.downstream.firstIndex { $0.name == down }!)
    }

    /// Every stored per-prompt row equals the engine's value, and hannamw/EAP-IG's (EAP, EAP-IG)
    /// and the TransformerLens path patching (exact) within the fixtures' tolerances.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func storedRowsAreTheEnginesAndTheReferences(name: String) throws {
        let folder = try Folder()
        let job = try Self.job(name, try Self.fixturePairs(in: folder), igSteps: Self.manifest.ig_steps)
        let db = try ResultsDatabase.inMemory()
        let id = try job.run(db: db)
        let ref = try SafetensorsFile(url: Self.fixtures.appendingPathComponent("reference/edges/\(name).safetensors"))
        let g = job.model.edgeGraph, n = g.upstream.count * g.downstream.count
        let stored = try db.edges(runID: id, aggregate: false)
        #expect(stored.count == Self.manifest.prompts.count * g.edgeCount * 3)
        var worst: [String: Double] = [:]
        for (p, pair) in Self.manifest.prompts.enumerated() {
            let engine: [String: EdgeScores] = [
                StoreName.eap: try job.model.edgeAttribution(clean: pair.tokens, corrupt: pair.corrupt_tokens, answer: pair.answer_id, wrong: pair.wrong_id),
                StoreName.eapIG: try job.model.edgeAttribution(clean: pair.tokens, corrupt: pair.corrupt_tokens, answer: pair.answer_id,
                                                               wrong: pair.wrong_id, igSteps: Self.manifest.ig_steps),
                StoreName.exact: try job.model.exactEdgeEffects(clean: pair.tokens, corrupt: pair.corrupt_tokens, answer: pair.answer_id,
                                                                wrong: pair.wrong_id),
            ]
            for r in stored where r.promptIndex == p {
                let e = Self.index(r, g)
                #expect(r.value == Double(engine[r.method]![e]), "\(name) \(r.method) prompt \(p) \(r.edge)")
                let want = try ref.floats(r.method)
                let scale = max(1, want.filter { !$0.isNaN }.map { Double(abs($0)) }.max() ?? 0)
                let diff = abs(r.value - Double(want[p * n + e.u * g.downstream.count + e.v])) / scale
                worst[r.method] = max(worst[r.method] ?? 0, diff)
                #expect(diff <= (r.method == StoreName.exact ? Self.manifest.tolerance.exact_rel : Self.manifest.tolerance.eap_rel),
                        "\(name) \(r.method) prompt \(p) \(r.edge): \(r.value)")
            }
        }
        print("\(name): stored rows against the references, worst |diff| / scale by method: \(worst)")
        // The aggregate rows: each edge's mean over the two prompts.
        let aggregates = try db.edges(runID: id, aggregate: true)
        #expect(aggregates.count == g.edgeCount * 3 && aggregates.allSatisfy { $0.nPrompts == 2 })
        for a in aggregates {
            let values = stored.filter { $0.edgeKey == a.edgeKey }.sorted { $0.promptIndex! < $1.promptIndex! }.map(\.value)
            #expect(a.value == (values[0] + values[1]) / 2, "\(a.edgeKey)")
        }
        let nmae = try db.summaries(runID: id).filter { $0.scope == StoreName.scopeEdges && $0.metric == StoreName.nmae }
        #expect(nmae.map(\.key).sorted() == [StoreName.eap, StoreName.eapIG] && nmae.allSatisfy { $0.value.isFinite })
    }

    /// `--exact top-K`: per prompt the K edges of largest |EAP|, each the engine's exact effect.
    @Test func topKExactEdgesAreTheLargestByEAP() throws {
        let folder = try Folder()
        let job = try Self.job("tiny-ln", try Self.fixturePairs(in: folder), methods: [.eap], exact: .top(7))
        let db = try ResultsDatabase.inMemory()
        let id = try job.run(db: db)
        let g = job.model.edgeGraph
        for (p, pair) in Self.manifest.prompts.enumerated() {
            let rows = try db.edges(runID: id, aggregate: false).filter { $0.promptIndex == p }
            let eap = rows.filter { $0.method == StoreName.eap }, exact = rows.filter { $0.method == StoreName.exact }
            #expect(eap.count == g.edgeCount && exact.count == 7)
            let threshold = exact.map { e in abs(eap.first { $0.edge == e.edge }!.value) }.min()!
            #expect(eap.filter { abs($0.value) > threshold }.count < 7)
            let all = try job.model.exactEdgeEffects(clean: pair.tokens, corrupt: pair.corrupt_tokens, answer: pair.answer_id, wrong: pair.wrong_id)
            for r in exact { #expect(r.value == Double(all[Self.index(r, g)]), "prompt \(p) \(r.edge)") }
        }
        let exactMeans = try db.edges(runID: id, aggregate: true, method: StoreName.exact)
        #expect(!exactMeans.isEmpty && exactMeans.allSatisfy { ($0.nPrompts ?? 0) >= 1 && ($0.nPrompts ?? 0) <= 2 })
    }

    struct Stored: Equatable {
        let prompts: [PromptRow], results: [ResultRow], summaries: [SummaryRow], edges: [EdgeRow]
        init(_ db: ResultsDatabase, _ id: Int64) throws {
            (prompts, results, summaries) = (try db.prompts(runID: id), try db.results(runID: id), try db.summaries(runID: id))
            edges = try db.edges(runID: id)
        }
    }

    /// Three shards merged store the unsharded run's prompts, results, summaries and edge rows
    /// (per prompt and aggregate) bit for bit.
    @Test func shardsMergedEqualOneRunBitForBit() throws {
        let folder = try Folder()
        let set = try Self.ioiPairs(in: folder)
        func job(_ shard: Shard?) throws -> EdgeJob {
            var job = try Self.job("tiny-lnfree", set, igSteps: 2, exact: .top(5), chunkSize: 2)
            job.shard = shard
            return job
        }
        let out = try ResultsDatabase(path: folder.path("out.sqlite"))
        let whole = try job(nil).run(db: out)
        let paths = try ShardMergeTests.shardFiles(3, in: folder, name: "edges") { shard, db in _ = try job(shard).run(db: db) }
        let merged = try MergeJob(outputPath: out.path, shardPaths: paths).run()
        guard case .created(let id) = try #require(merged.first).outcome else { Issue.record("not created"); return }
        let a = try Stored(out, whole), b = try Stored(out, id)
        #expect(a == b)
        #expect(a.edges.count > 6 * 110 && a.edges.contains { $0.promptIndex == nil })
        #expect(try out.verifiedRun(id: id)?.status == .completed)
        #expect(try MergeJob(outputPath: out.path, shardPaths: paths).run().map(\.outcome) == [.alreadyMerged(id)])
    }

    /// Stopped after its first chunk (Ctrl-C), then resumed: the rows of an uninterrupted run.
    @Test func interruptedRunResumesToTheSameRows() throws {
        let folder = try Folder()
        let job = try Self.job("tiny-ln", try Self.ioiPairs(in: folder), igSteps: 2, exact: .top(3), chunkSize: 2)
        let full = try ResultsDatabase.inMemory(), db = try ResultsDatabase(path: folder.path("r.sqlite"))
        let whole = try job.run(db: full)
        #expect(throws: JobError.self) {
            try job.run(db: db, progress: { done, _ in if done >= 2 { throw JobStop() } })
        }
        #expect(try db.run(id: 1)?.status == .interrupted)
        #expect(try db.completedPromptIndices(runID: 1).count == 2)
        #expect(try db.edges(runID: 1, aggregate: true).isEmpty)
        #expect(try job.run(db: db, resume: 1) == 1)
        #expect(try Stored(db, 1) == Stored(full, whole))
    }

    /// Bad options: a one-line error naming the option, and no run stored.
    @Test func badOptionsStoreNothing() throws {
        let folder = try Folder()
        let set = try Self.fixturePairs(in: folder)
        let db = try ResultsDatabase.inMemory()
        let cases: [(EdgeJob, String)] = [
            (try Self.job("tiny-ln", set, igSteps: 0), "--ig-steps 0"),
            (try Self.job("tiny-ln", set, methods: [.eapIG], exact: .top(3)), "add eap to --methods"),
        ]
        for (job, needle) in cases {
            #expect { try job.run(db: db) } throws: { ($0 as? LocalizedError)?.errorDescription?.contains(needle) == true }
        }
        let small = EdgeGraph(nLayers: 12, nHeads: 12)
        #expect(throws: EdgeError.tooManyExact(model: "gpt2", edges: small.edgeCount, limit: EdgeJob.maxExactEdges)) {
            try EdgeJob.check(methods: [.eap], igSteps: 5, exact: .all, graph: small, model: "gpt2")
        }
        #expect(small.edgeCount == 32491)
        #expect(try db.runs().isEmpty)
        #expect(ExactEdges("top-0") == nil && ExactEdges("top-x") == nil && ExactEdges("some") == nil && ExactEdges("top-3") == .top(3))
        #expect(throws: EdgeError.badMethods("eap,acdc")) { try EdgeMethod.parseList("eap,acdc") }
    }
}

import Foundation
import GPT2
import ResultsStore
import Testing

/// `lnlens edges` through the binary: a run on the test checkpoints stores the rows of
/// hannamw/EAP-IG and of TransformerLens path patching (Tests/Fixtures/reference/edges), the
/// summary, the named query, shards merged, kill and resume, bad input.
@Suite struct EdgesCLITests {
    typealias C = CLITests

    struct Manifest: Decodable {
        struct Prompt: Decodable { let prompt: String, answer: String, wrong: String, corrupt: String }
        struct Tolerance: Decodable { let eap_rel: Double, exact_rel: Double }
        struct Nodes: Decodable { let forward: [String], backward: [String] }
        let prompts: [Prompt]
        let nodes: Nodes
        let ig_steps: Int
        let tolerance: Tolerance
    }

    static let manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: C.fixtures.appendingPathComponent("reference/edges/manifest.json")))

    /// A test checkpoint with the GPT-2 tokenizer beside it (the checkpoints have none).
    static func model(_ name: String, in dir: URL) throws -> String {
        let model = dir.appendingPathComponent(name), source = C.fixtures.appendingPathComponent("models/\(name)")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        for f in try FileManager.default.contentsOfDirectory(atPath: source.path) {
            try FileManager.default.copyItem(at: source.appendingPathComponent(f), to: model.appendingPathComponent(f))
        }
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: C.repo.appendingPathComponent("models/tokenizer/\(f)"), to: model.appendingPathComponent(f))
        }
        return model.path
    }

    /// The fixture pairs as a prompt file.
    static func fixturePairs(in dir: URL) throws -> String {
        let file = dir.appendingPathComponent("pairs.jsonl")
        let lines = try manifest.prompts.map {
            String(decoding: try JSONSerialization.data(withJSONObject: ["prompt": $0.prompt, "answer": $0.answer, "wrong": $0.wrong,
                                                                         "corrupt": $0.corrupt]), as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// `edges --exact all` on the fixture pairs, LN model and LN-free twin in one invocation:
    /// every stored per-prompt row within the fixtures' tolerance of the references.
    @Test func storedRowsMatchHannamwAndPathPatching() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let names = ["tiny-ln", "tiny-lnfree"], db = dir.appendingPathComponent("r.sqlite").path
        let r = try C.run(["edges"] + names.flatMap { ["--model", try Self.model($0, in: dir)] }
                          + ["--prompts", try Self.fixturePairs(in: dir), "--ig-steps", "\(Self.manifest.ig_steps)", "--exact", "all",
                             "--min-gap", "0", "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("110 edges") && r.stdout.contains("eap against exact: NMAE"), "\(r.stdout)")
        #expect(r.stdout.contains("top 10 edges by |mean eap|"), "\(r.stdout)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        let up = Self.manifest.nodes.forward, down = Self.manifest.nodes.backward, n = up.count * down.count
        for (id, name) in zip([Int64(1), 2], names) {
            let ref = try SafetensorsFile(url: C.fixtures.appendingPathComponent("reference/edges/\(name).safetensors"))
            let rows = try store.edges(runID: id, aggregate: false)
            #expect(rows.count == 2 * 110 * 3)
            var worst = 0.0
            for row in rows {
                let want = try ref.floats(row.method)
                let scale = max(1, want.filter { !$0.isNaN }.map { Double(abs($0)) }.max() ?? 0)
                let u = up.firstIndex(of: row.upstream)!, v = down.firstIndex(of: row.downstream + (row.input.map { "<\($0)>" } ?? ""))!
                let diff = abs(row.value - Double(want[row.promptIndex! * n + u * down.count + v])) / scale
                worst = max(worst, diff)
                #expect(diff <= (row.method == "exact" ? Self.manifest.tolerance.exact_rel : Self.manifest.tolerance.eap_rel),
                        "\(name) \(row.method) prompt \(row.promptIndex!) \(row.edge)")
            }
            print("\(name): lnlens edges vs references, worst |diff| / scale \(String(format: "%.1e", worst))")
        }
        let query = try C.run(["query", "top-edges", "1", "--db", db, "--limit", "3", "--json"])
        #expect(query.status == 0 && query.stdout.contains("\"exact_prompts\""), "\(query.stdout) \(query.stderr)")
    }

    /// Two shards merged with `lnlens merge` equal the unsharded run; kill -9 and --resume too.
    @Test func shardsMergeAndAKilledRunResumes() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["edges", "--model", "gpt2-tiny", "--prompts", try PatchCLITests.prompts(in: dir), "--exact", "top-4",
                    "--ig-steps", "2", "--chunk-size", "1"]
        let whole = dir.appendingPathComponent("whole.sqlite").path
        #expect(try C.run(args + ["--db", whole]).status == 0)
        let shards = try (0..<2).map { i in
            let path = dir.appendingPathComponent("s\(i).sqlite").path
            let r = try C.run(args + ["--db", path, "--shard", "\(i)/2"])
            #expect(r.status == 0, "\(r.stderr)")
            return path
        }
        let out = dir.appendingPathComponent("out.sqlite").path
        let merge = try C.run(["merge", out] + shards)
        #expect(merge.status == 0, "\(merge.stderr)")
        let a = try ResultsDatabase.openReadOnly(path: whole), b = try ResultsDatabase.openReadOnly(path: out)
        #expect(try a.edges(runID: 1) == b.edges(runID: 1))
        #expect(try a.summaries(runID: 1) == b.summaries(runID: 1))
        // kill -9 after a few prompts, then --resume 1.
        let killed = dir.appendingPathComponent("killed.sqlite").path
        let (p, _, _) = try C.start(args + ["--db", killed, "--methods", "eap", "--ig-steps", "2"])
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, p.isRunning {
            if let db = try? ResultsDatabase.openReadOnly(path: killed), let n = try? db.completedPromptIndices(runID: 1).count, n >= 2 { break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        #expect(p.isRunning, "the run finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let resumed = try C.run(args + ["--db", killed, "--methods", "eap", "--resume", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let full = dir.appendingPathComponent("full.sqlite").path
        #expect(try C.run(args + ["--db", full, "--methods", "eap"]).status == 0)
        let x = try ResultsDatabase.openReadOnly(path: full), y = try ResultsDatabase.openReadOnly(path: killed)
        #expect(try y.run(id: 1)?.status == .completed)
        #expect(try x.edges(runID: 1) == y.edges(runID: 1))
        #expect(try x.results(runID: 1) == y.results(runID: 1))
    }

    /// Bad options: one line naming the option, non-zero exit, no database written.
    @Test func hostileInputsStoreNothing() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let base = ["edges", "--prompts", "ioi", "--db", db]
        try C.expectOneLineError(base + ["--exact", "most"], mentions: ["--exact most", "top-K"])
        try C.expectOneLineError(base + ["--exact", "top-0"], mentions: ["--exact top-0"])
        try C.expectOneLineError(base + ["--ig-steps", "0"], mentions: ["--ig-steps 0"])
        try C.expectOneLineError(base + ["--methods", "eap,acdc"], mentions: ["--methods eap,acdc"])
        try C.expectOneLineError(base + ["--methods", "eap-ig", "--exact", "top-5"], mentions: ["--exact top-5", "add eap"])
        try C.expectOneLineError(base + ["--min-gap", "-1"], mentions: ["--min-gap"])
        #expect(!FileManager.default.fileExists(atPath: db))
    }
}

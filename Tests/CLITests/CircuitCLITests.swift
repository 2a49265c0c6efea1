import Foundation
import GPT2
import GRDB
import ResultsStore
import Testing
import Tokenizer

/// `lnlens circuit` through the binary: the stored curves against the engine run here on the
/// stored scores, the ends of the curve, overlap@k, hostile input, and a v4 database.
@Suite struct CircuitCLITests {
    typealias C = CLITests

    /// An edges run of both test checkpoints on the fixture pairs (runs 1 and 2) in `dir`.
    static func edgesDatabase(in dir: URL) throws -> (db: String, models: [String]) {
        let models = try ["tiny-ln", "tiny-lnfree"].map { try EdgesCLITests.model($0, in: dir) }
        let db = dir.appendingPathComponent("r.sqlite").path
        let r = try C.run(["edges"] + models.flatMap { ["--model", $0] }
                          + ["--prompts", try EdgesCLITests.fixturePairs(in: dir), "--methods", "eap,eap-ig", "--ig-steps", "2",
                             "--min-gap", "0", "--db", db])
        #expect(r.status == 0, "\(r.stderr)")
        return (db, models)
    }

    /// The engine's curve, recomputed here: the stored aggregate scores as `EdgeScores`, the stored
    /// prompts tokenized, `GPT2Model.faithfulness` per prompt, then the means.
    static func engineCurve(db: ResultsDatabase, edgesRun: Int64, model path: String, method: String, sizes: [Int],
                            selection: CircuitSelection) throws -> [(edges: Int, metric: Double, normalized: Double)] {
        let model = try GPT2Model(checkpoint: Checkpoint.open(path), processing: .all), graph = model.edgeGraph
        let tok = try GPT2Tokenizer.load(directory: URL(fileURLWithPath: path))
        let up = Dictionary(uniqueKeysWithValues: graph.upstream.enumerated().map { ($1.name, $0) })
        let down = Dictionary(uniqueKeysWithValues: graph.downstream.enumerated().map { ($1.name, $0) })
        var values = [Float](repeating: .nan, count: graph.upstream.count * graph.downstream.count)
        for e in try db.edges(runID: edgesRun, aggregate: true, method: method) {
            values[up[e.upstream]! * graph.downstream.count + down[e.downstream + (e.input.map { "<\($0)>" } ?? "")]!] = Float(e.value)
        }
        let scores = EdgeScores(graph: graph, values: values)
        var sums = [Double](repeating: 0, count: sizes.count), edges = [Int](repeating: 0, count: sizes.count)
        var clean = 0.0, corrupt = 0.0
        let prompts = try db.prompts(runID: edgesRun)
        for p in prompts {
            let bos = [tok.endOfTextID]
            let pair = try model.circuitPair(clean: bos + tok.encode(p.prompt), corrupt: bos + tok.encode(p.corrupt!),
                                             answer: tok.encode(p.answer)[0], wrong: tok.encode(p.wrong!)[0])
            for (i, point) in try model.faithfulness(scores, sizes: sizes, selection: selection, pair).enumerated() {
                sums[i] += point.metric
                edges[i] = point.edges
            }
            (clean, corrupt) = (clean + pair.cleanMetric, corrupt + pair.corruptMetric)
        }
        let n = Double(prompts.count)
        return sizes.indices.map { i in
            (edges[i], sums[i] / n, (sums[i] / n - corrupt / n) / (clean / n - corrupt / n))
        }
    }

    /// Both models, top and greedy: every stored point equals the engine's on the stored scores;
    /// the empty circuit is the corrupted run (0) and all 110 edges the clean run (1); overlap@k
    /// is printed and stored edge sets have the stored sizes.
    @Test func storedCurvesAreTheEnginesOnTheStoredScores() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, models) = try Self.edgesDatabase(in: dir)
        let sizes = [0, 3, 10, 40, 110]
        for (selection, engine) in [("top", CircuitSelection.top), ("greedy", .greedy)] {
            let r = try C.run(["circuit", "1", "2", "--db", db, "--sizes", sizes.map(String.init).joined(separator: ","),
                               "--selection", selection])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("overlap@k") && r.stdout.contains("faithfulness"), "\(r.stdout)")
            let store = try ResultsDatabase.openReadOnly(path: db)
            let circuitRuns = try store.runs().filter { $0.command == "circuit" }.suffix(2)
            #expect(circuitRuns.count == 2 && circuitRuns.allSatisfy { $0.status == .completed })
            for (run, (edgesRun, model)) in zip(circuitRuns, zip([Int64(1), 2], models)) {
                let stored = try store.faithfulness(runID: run.id!), circuitEdges = try store.circuitEdges(runID: run.id!)
                #expect(Set(stored.map(\.method)) == ["eap", "eap_ig"])
                for method in ["eap", "eap_ig"] {
                    let want = try Self.engineCurve(db: store, edgesRun: edgesRun, model: model, method: method, sizes: sizes, selection: engine)
                    let got = stored.filter { $0.method == method }.sorted { $0.requested < $1.requested }
                    #expect(got.count == sizes.count)
                    var worst = 0.0
                    for (g, w) in zip(got, want) {
                        #expect(g.edges == w.edges, "\(method) \(selection) \(g.requested)")
                        #expect(circuitEdges.filter { $0.method == method && $0.requested == g.requested }.count == g.edges)
                        worst = max(worst, abs(g.metric - w.metric), abs(g.normalized! - w.normalized))
                    }
                    #expect(worst <= 1e-9, "\(method) \(selection): stored vs engine \(worst)")
                    print("run \(run.id!) \(method) \(selection): stored curve vs engine, max |diff| \(String(format: "%.1e", worst))")
                    // The engine's layer-by-layer forward against the plain forward, Float32, divided by the
                    // test checkpoints' small clean − corrupt gap: 1.2e-6 … 4.5e-6 here, hence 1e-5.
                    #expect(abs(got.first!.normalized!) <= 1e-5, "size 0: \(got.first!.normalized!)")
                    #expect(abs(got.last!.normalized! - 1) <= 1e-5, "all edges: \(got.last!.normalized!)")
                }
            }
        }
    }

    /// Unknown run, a run that is not an edges run, sizes out of range, a method the run lacks, bad
    /// option values: one line naming the option, non-zero exit, nothing stored.
    @Test func hostileInputsStoreNothing() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, _) = try Self.edgesDatabase(in: dir)
        #expect(try C.run(["circuit", "1", "--db", db, "--sizes", "0,110"]).status == 0)  // run 3, a circuit run
        let before = try ResultsDatabase.openReadOnly(path: db).runs().count
        try C.expectOneLineError(["circuit", "99", "--db", db], mentions: ["no run 99"])
        try C.expectOneLineError(["circuit", "3", "--db", db], mentions: ["run 3 is a circuit run", "edges run"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--sizes", "5,111"], mentions: ["--sizes (--top) 111", "110 edges"])
        try C.expectOneLineError(["circuit", "1", "2", "--db", db, "--top", "-1"], mentions: ["--sizes (--top)"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--methods", "exact"], mentions: ["--methods", "no exact"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--methods", "acdc"], mentions: ["--methods acdc"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--selection", "best"], mentions: ["--selection best"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--thresholds", "0.1"], mentions: ["--thresholds"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--selection", "threshold"], mentions: ["--thresholds"])
        try C.expectOneLineError(["circuit", "1", "--db", db, "--selection", "threshold", "--thresholds", "x"], mentions: ["--thresholds x"])
        #expect(try ResultsDatabase.openReadOnly(path: db).runs().count == before)
        let missing = dir.appendingPathComponent("none.sqlite").path
        try C.expectOneLineError(["circuit", "1", "--db", missing], mentions: [missing])
        #expect(!FileManager.default.fileExists(atPath: missing))
    }

    /// A database written before v5 (an edges run, no circuit tables): `circuit` migrates it and
    /// stores its run; thresholds work on it.
    @Test func aV4DatabaseMigrates() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, _) = try Self.edgesDatabase(in: dir)
        // Back to v4: v5 only added these two tables.
        let queue = try DatabaseQueue(path: db)
        try queue.write { d in
            try d.execute(sql: "DROP TABLE circuit_edges; DROP TABLE faithfulness; DELETE FROM grdb_migrations WHERE identifier = 'v5'")
        }
        try queue.close()
        #expect(try ResultsDatabase.appliedMigrations(path: db) == ["v1", "v2", "v3", "v4"])
        let r = try C.run(["circuit", "2", "--db", db, "--selection", "threshold", "--thresholds", "1e9,0", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try ResultsDatabase.appliedMigrations(path: db).contains("v5"))
        let store = try ResultsDatabase.openReadOnly(path: db)
        let curve = try store.faithfulness(runID: 3).filter { $0.method == "eap" }
        #expect(curve.map(\.requested) == [0, 1e9] && curve.map(\.edges) == [110, 0], "\(curve)")
        #expect(r.stdout.contains("\"edges_run\" : 2"), "\(r.stdout)")
    }
}

import Foundation
import GPT2
import Support
import Tokenizer

/// Edge attribution and circuits on one IOI prompt pair (15 tokens with BOS), timed in rounds
/// with one plain forward (logits at the last position): EAP over every edge, EAP-IG with 5
/// steps, a circuit pair's preparation (the corrupted run's node activations, both runs' metric)
/// and one circuit's evaluation (hannamw/EAP-IG's `evaluate_graph`) at 500 edges and at half the
/// edges (what scripts/reference/time_hannamw_edges.py times with hannamw/EAP-IG).
func benchEdges(model: GPT2Model, options o: BenchOptions) throws -> ([Measurement], [String: Double]) {
    let tok = try GPT2Tokenizer.load(directory: Resources.models.appendingPathComponent("tokenizer"))
    let bos = tok.endOfTextID
    let clean = [bos] + tok.encode("When Mary and John went to the store, John gave a drink to")
    let corrupt = [bos] + tok.encode("When Mary and John went to the store, Mary gave a drink to")
    let answer = tok.encode(" Mary")[0], wrong = tok.encode(" John")[0]
    let pair = try model.circuitPair(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong)
    let scores = try model.edgeAttribution(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong)
    let graph = model.edgeGraph
    let small = Circuit.top(500, of: scores), half = Circuit.top(graph.edgeCount / 2, of: scores)
    let jobs: [(String, () throws -> Void)] = [
        ("EAP over all \(graph.edgeCount) edges", {
            blackHole(try model.edgeAttribution(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong).values[0]) }),
        ("EAP-IG (inputs), 5 steps", {
            blackHole(try model.edgeAttribution(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong, igSteps: 5).values[0]) }),
        ("circuit pair (corrupted run's node activations, both metrics)", {
            blackHole(Float(try model.circuitPair(clean: clean, corrupt: corrupt, answer: answer, wrong: wrong).cleanMetric)) }),
        ("one circuit, top 500 by EAP (\(small.edgeCount) edges after pruning)", {
            blackHole(Float(try model.circuitMetric(small, pair, prune: false))) }),
        ("one circuit, top half by EAP (\(half.edgeCount) edges after pruning)", {
            blackHole(Float(try model.circuitMetric(half, pair, prune: false))) }),
    ]
    var bodies: [() throws -> Void] = [{
        let pass = try model.run([clean], ForwardOptions(logits: .last))
        withExtendedLifetime(pass) { blackHole(pass.logits[0]) }
    }]
    bodies += jobs.map(\.1)
    let timings = try measureInRounds(warmup: 1, runs: max(3, o.runs / 3), bodies)
    var rows = [Measurement(section: "edges", name: "one forward, 1×\(clean.count) tokens (logits at the last position)",
                            seconds: timings[0].seconds, cores: timings[0].cores)]
    var derived: [String: Double] = [:]
    let forward = Summary(timings[0].seconds).median
    for (i, job) in jobs.enumerated() {
        rows.append(Measurement(section: "edges", name: "per prompt: " + job.0, seconds: timings[i + 1].seconds, cores: timings[i + 1].cores))
        derived["edges: \(job.0) / one forward"] = Summary(timings[i + 1].seconds).median / forward
    }
    return (rows, derived)
}

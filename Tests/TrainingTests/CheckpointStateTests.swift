import Foundation
import Testing
import Training

/// A checkpoint's state.json is taken only when lnlens could have written it (issue 16: the
/// fuzz target's promise), so a resume never trains from a negative step or indexes past an array.
@Suite struct CheckpointStateTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The remove-ln seed of the checkpoint fuzz target (a real state.json), edited by `change`.
    func state(_ change: (inout [String: Any]) -> Void = { _ in }) throws -> Data {
        let url = Self.repo.appendingPathComponent("fuzz/corpus/checkpoint/remove-ln.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&object)
        return try JSONSerialization.data(withJSONObject: object)
    }

    @Test func aRealStateDecodes() throws {
        let s = try TrainingCheckpoint.decode(try state(), file: "state.json")
        #expect(s.stepsDone == 6 && s.layerNorms != nil)
    }

    @Test func impossibleStatesAreRefused() throws {
        let edits: [(String, (inout [String: Any]) -> Void)] = [
            ("step", { $0["stepsDone"] = -3 }),
            ("step", { $0["stepsDone"] = 10_000 }),
            ("AdamW", { $0["adamSteps"] = 99 }),
            ("time", { $0["seconds"] = -1.0 }),
            ("layers", { o in
                var ln = o["layerNorms"] as! [String: Any]
                ln["ln1Sigma"] = [1.0]
                o["layerNorms"] = ln
            }),
            ("σ", { o in
                var ln = o["layerNorms"] as! [String: Any]
                var sigmas = ln["ln2Sigma"] as! [Any]
                sigmas[0] = -2.0
                ln["ln2Sigma"] = sigmas
                o["layerNorms"] = ln
            }),
        ]
        for (what, edit) in edits {
            let error = #expect(throws: TrainingError.self) { _ = try TrainingCheckpoint.decode(try state(edit), file: "x/state.json") }
            let text = error?.localizedDescription ?? ""
            #expect(text.contains("x/state.json") && text.contains(what), "\(what): \(text)")
        }
        #expect(throws: TrainingError.self) { _ = try TrainingCheckpoint.decode(Data("{".utf8), file: "s.json") }
    }
}

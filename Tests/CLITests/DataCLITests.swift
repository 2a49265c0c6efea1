import Foundation
import ResultsStore
import Support
import Testing

/// `--tokens` and `--dataset` through the binary: train and eval on nanoGPT files and JSON Lines
/// documents, `dla --dataset` on the embedded model, and one-line errors for bad files.
@Suite struct DataCLITests {
    typealias C = CLITests
    static let data = C.fixtures.appendingPathComponent("data")
    static func file(_ name: String) -> String { data.appendingPathComponent(name).path }

    static let small = ["--seq-len", "16", "--batch-tokens", "64", "--micro-batch", "2", "--steps", "3", "--warmup", "1"]

    /// The same ids from a nanoGPT .bin, a u32 .bin and an .npy train to the same weights, bit
    /// for bit; the run records the file and its hash, and a resume from another file is refused.
    @Test func trainOnTokenFiles() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TrainCLITests.config(in: dir)
        let db = dir.appendingPathComponent("t.sqlite").path
        func train(_ data: [String], _ out: String) throws -> C.Result {
            try C.run(["train", "--init", config] + data + Self.small + ["--out", dir.appendingPathComponent(out).path, "--db", db])
        }
        let bin = try train(["--tokens", Self.file("stream.u16.bin"), "--keep-checkpoints"], "bin")
        #expect(bin.status == 0, "\(bin.stderr)")
        #expect(bin.stdout.contains("15 documents"), "\(bin.stdout)")
        let npy = try train(["--tokens", Self.file("stream.i8.v2.npy")], "npy")
        #expect(npy.status == 0, "\(npy.stderr)")
        let u32 = try train(["--tokens", Self.file("stream.u32.bin"), "--token-dtype", "u32"], "u32")
        #expect(u32.status == 0, "\(u32.stderr)")
        // The tensors, after the header (whose metadata names the data file).
        let weights = try ["bin", "npy", "u32"].map { name -> Data in
            let file = try Data(contentsOf: dir.appendingPathComponent("\(name)/model.safetensors"))
            let header = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            return file.dropFirst(8 + header)
        }
        #expect(weights[0] == weights[1] && weights[0] == weights[2], "the same ids trained to different weights")
        // A resume from another file, or the same one read as another type, is refused naming the option.
        try C.expectOneLineError(["train", "--init", config, "--tokens", Self.file("stream.u2.v1.npy")] + Self.small
                                 + ["--out", dir.appendingPathComponent("bin").path, "--db", db, "--resume"], mentions: ["--tokens", "stream.u16.bin"])
        let store = try ResultsDatabase.openReadOnly(path: db)
        let runs = try store.runs()
        #expect(runs.map(\.status) == [.completed, .completed, .completed])
        let options = try #require(runs.first).optionsJSON
        #expect(options.contains("\"tokens\":") && options.contains("stream.u16.bin") && !options.contains("\"corpus\""), "\(options)")
        #expect(runs.map { $0.promptSetHash.prefix(4) } == ["u16:", "i64:", "u32:"])
    }

    @Test func trainRemoveLNAndEvalOnADatasetCutIntoDocumentWindows() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("d.sqlite").path
        let config = try TrainCLITests.config(in: dir)
        let out = dir.appendingPathComponent("m").path
        let train = try C.run(["train", "--init", config, "--dataset", Self.file("docs.jsonl"), "--seq-len", "8", "--batch-tokens", "32",
                               "--micro-batch", "2", "--steps", "3", "--warmup", "1", "--out", out, "--db", db])
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stdout.contains("cut into 36 windows of 8 that never cross a document"), "\(train.stdout)")
        // remove-ln reads the data as train does (schedule compressed to 9 steps).
        let schedule = ["--ln2-start", "1", "--ln2-gap", "1", "--ln1qk-gap", "1", "--ln1v-gap", "1", "--steps", "9", "--warmup", "1"]
        let remove = try C.run(["remove-ln", out, "--dataset", Self.file("docs.jsonl"), "--seq-len", "8", "--batch-tokens", "32",
                                "--micro-batch", "2"] + schedule + ["--out", dir.appendingPathComponent("free").path, "--db", db])
        #expect(remove.status == 0 && remove.stdout.contains("ln_f removed"), "\(remove.stdout) \(remove.stderr)")
        // eval: the embedded model on the same rows in windows of 16, and on the nanoGPT stream.
        let eval = try C.run(["eval", "gpt2-tiny", "--dataset", Self.file("ids.jsonl"), "--field", "input_ids", "--context", "16", "--db", db, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as! [String: Any]
        let model = (object["models"] as! [[String: Any]])[0]
        #expect(model["windows"] as? Int == 14 && (model["loss"] as! Double).isFinite)
        let stream = try C.run(["eval", "gpt2-tiny", "--tokens", Self.file("stream.u2.v3.npy"), "--context", "16", "--db", db])
        #expect(stream.status == 0 && stream.stdout.contains("21 windows of 16"), "\(stream.stdout) \(stream.stderr)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        let runs = try store.runs()
        #expect(runs.map(\.command) == ["train", "remove-ln", "eval", "eval"])
        #expect(runs[1].optionsJSON.contains("\"field\":\"text\"") && runs[1].promptSetHash == runs[0].promptSetHash)
        #expect(runs[2].optionsJSON.contains("\"field\":\"input_ids\"") && runs[2].optionsJSON.contains("\"dataset\":"), "\(runs[2].optionsJSON)")
        #expect(runs[2].promptSetHash.hasPrefix("w16:") && runs[3].promptSetHash.hasPrefix("u16:"))
    }

    /// The paper's DLA input: each row's first --context tokens; rows shorter are skipped and
    /// counted; the dataset's identity is stored and a resume with another one is refused.
    @Test func dlaOnDatasetRows() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("dla.sqlite").path
        let args = ["dla", "--model", "gpt2-tiny", "--dataset", Self.file("docs.jsonl"), "--context", "16", "--db", db]
        let r = try C.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("7 of 15 rows are shorter than 16 tokens and were skipped (lines 4, 6, 9, 11, 12, …); 8 rows attributed"),
                "\(r.stderr)")
        let store = try ResultsDatabase.openReadOnly(path: db)
        let run = try #require(try store.runs().first)
        #expect(run.nPrompts == 8 && run.status == .completed)
        #expect(run.promptSetHash == SHA256.hex(try Data(contentsOf: Self.data.appendingPathComponent("docs.jsonl"))))
        for needle in ["\"dataset\":", "\"field\":\"text\"", "\"skipped_rows\":7", "\"targets\":\"paper\"", "\"context\":16"] {
            #expect(run.optionsJSON.contains(needle), "\(run.optionsJSON) lacks \(needle)")
        }
        // --rows 5: rows 1–5, one (line 4) shorter than 16.
        let five = try C.run(args + ["--rows", "5"])
        #expect(five.status == 0 && five.stderr.contains("1 of 5 rows"), "\(five.stderr)")
        #expect(try store.run(id: 2)?.nPrompts == 4)
        // Resuming run 2 with another row count or key is refused, naming the option.
        try C.expectOneLineError(args + ["--rows", "6", "--resume", "2"], mentions: ["cannot resume run 2"])
        try C.expectOneLineError(["dla", "--model", "gpt2-tiny", "--dataset", Self.file("ids.jsonl"), "--field", "input_ids",
                                  "--context", "16", "--rows", "5", "--db", db, "--resume", "2"], mentions: ["prompt set hash"])
    }

    @Test func badDataIsOneLineNamingTheFile() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try TrainCLITests.config(in: dir)
        let rows = dir.appendingPathComponent("rows.jsonl")
        try "{\"text\": \"fine\"}\n{\"body\": \"no text\"}\n".write(to: rows, atomically: true, encoding: .utf8)
        func train(_ data: [String]) -> [String] {
            ["train", "--init", config] + data + Self.small + ["--out", dir.appendingPathComponent("o").path,
                                                               "--db", dir.appendingPathComponent("e.sqlite").path]
        }
        try C.expectOneLineError(train(["--tokens", Self.file("bad/odd.bin")]), mentions: ["odd.bin", "7 bytes"])
        try C.expectOneLineError(train(["--tokens", Self.file("bad/out_of_range.bin")]), mentions: ["out_of_range.bin", "offset 5", "50257"])
        try C.expectOneLineError(train(["--tokens", Self.file("bad/fortran.npy")]), mentions: ["fortran.npy", "fortran_order"])
        try C.expectOneLineError(train(["--tokens", Self.file("bad/c2d.npy")]), mentions: ["c2d.npy", "2-D"])
        try C.expectOneLineError(train(["--dataset", rows.path]), mentions: ["rows.jsonl line 2", "no \"text\""])
        try C.expectOneLineError(["eval", "--tokens", Self.file("bad/truncated.npy")], mentions: ["truncated.npy", "truncated"])
        try C.expectOneLineError(["dla", "--model", "gpt2-tiny", "--dataset", rows.path, "--context", "4"], mentions: ["line 2"])
        try C.expectOneLineError(["dla", "--model", "gpt2-tiny", "--dataset", Self.file("docs.jsonl"), "--context", "200"],
                                 mentions: ["shorter than --context"])
        try C.expectOneLineError(train(["--dataset", Self.file("docs.jsonl"), "--token-dtype", "u16"]), mentions: ["--token-dtype goes with --tokens"])
        try C.expectOneLineError(train(["--tokens", Self.file("stream.u16.bin"), "--token-dtype", "u8"]), mentions: ["u16", "u32"])
        try C.expectOneLineError(train(["--tokens", Self.file("stream.u16.bin"), "--corpus", "heldout"]), mentions: ["not several"])
        try C.expectOneLineError(["dla", "--text", "heldout", "--rows", "3"], mentions: ["--rows"])
        #expect(try C.run(train(["--tokens", Self.file("bad/odd.bin")])).status == 1)
    }
}

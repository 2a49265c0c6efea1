import Foundation
import Testing

/// `lnlens run --metric` and `lnlens export` through the binary.
@Suite struct GradientCLITests {
    typealias C = CLITests

    @Test func badGradientOptionsAreOneLine() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("g.safetensors").path
        let p = ["run", "--prompt", "When Mary and John went to the store, John gave a drink to"]
        try C.expectOneLineError(p + ["--grad-cache", out, "--hooks", "all"], mentions: ["--grad-cache needs --metric"])
        try C.expectOneLineError(p + ["--param-grads", out, "--no-process"], mentions: ["--param-grads needs --metric"])
        try C.expectOneLineError(p + ["--metric", "logit-diff", "--answer", " Mary"], mentions: ["logit-diff needs --answer", "--wrong"])
        try C.expectOneLineError(p + ["--metric", "logit-diff", "--answer", " Mariana Smith", "--wrong", " John"],
                                 mentions: ["--answer", "Mariana Smith", "one token"])
        try C.expectOneLineError(p + ["--metric", "loss", "--param-grads", out], mentions: ["--param-grads needs --no-process"])
        try C.expectOneLineError(p + ["--metric", "loss", "--grad-cache", out, "--hooks", "blocks.0.hook_nothing"],
                                 mentions: ["blocks.0.hook_nothing"])
        try C.expectOneLineError(p + ["--metric", "entropy"], mentions: ["--metric entropy"])
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// The gradient file of the binary equals the library's gradients, the metric is printed, and
    /// the cache file holds activations and gradients side by side.
    @Test func gradientFilesHoldEveryRequestedHook() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let grads = dir.appendingPathComponent("g.safetensors").path, cache = dir.appendingPathComponent("c.safetensors").path
        let r = try C.run(["run", "--prompt", "When Mary and John went to the store, John gave a drink to", "--metric", "logit-diff",
                           "--answer", " Mary", "--wrong", " John", "--grad-cache", grads, "--cache", cache,
                           "--hooks", "blocks.*.hook_resid_pre", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let metric = json?["metric"] as? [String: Any]
        #expect(metric?["name"] as? String == "logit-diff" && metric?["value"] is Double)
        let g = try String(decoding: Data(contentsOf: URL(fileURLWithPath: grads)).prefix(4096), as: UTF8.self)
        for l in 0..<4 { #expect(g.contains("\"blocks.\(l).hook_resid_pre_grad\"")) }
        let c = try String(decoding: Data(contentsOf: URL(fileURLWithPath: cache)).prefix(4096), as: UTF8.self)
        #expect(c.contains("\"blocks.0.hook_resid_pre\"") && c.contains("\"blocks.0.hook_resid_pre_grad\"") && c.contains("\"logits\""))
    }

    /// An exported folder loads back as the same model (tiny-ln is F16, prefixed, tied).
    @Test func exportRoundTrips() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try HostileInputTests.modelCopy(in: dir)
        let out = dir.appendingPathComponent("exported").path
        #expect(try C.run(["export", source.path, "--out", out]).status == 0)
        try C.expectOneLineError(["export", source.path, "--out", out], mentions: ["already exists", "--force"])
        try C.expectOneLineError(["export", source.path, "--out", source.path], mentions: ["never overwrites an input"])
        let a = try C.run(["run", source.path, "--prompt", "Hello there", "--no-process", "--json", "--top-k", "5"])
        let b = try C.run(["run", out, "--prompt", "Hello there", "--no-process", "--json", "--top-k", "5"])
        #expect(a.status == 0 && b.status == 0 && a.stdout == b.stdout)
        let f16 = dir.appendingPathComponent("f16").path
        #expect(try C.run(["export", out, "--out", f16, "--dtype", "f16"]).status == 0)
        let c = try C.run(["run", f16, "--prompt", "Hello there", "--no-process", "--json", "--top-k", "5"])
        #expect(c.stdout == a.stdout, "tiny-ln's weights are F16 already: storing them as F16 again is exact")
    }
}

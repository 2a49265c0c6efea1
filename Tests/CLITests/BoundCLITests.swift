import Foundation
import Testing

/// `lnlens patch --atp-star-bound` through the binary: the printed table and the JSON, the same
/// seed giving the same bound, and bad settings as one-line errors that store nothing.
@Suite struct BoundCLITests {
    typealias C = CLITests

    static func args(_ dir: URL, db: String, _ extra: [String]) throws -> [String] {
        ["patch", "--model", "gpt2-tiny", "--prompts", try PatchCLITests.prompts(in: dir), "--db", dir.appendingPathComponent(db).path,
         "--sites", "mlp_out,z", "--methods", "activation,atp-star"] + extra
    }

    @Test func boundIsPrintedStoredAndRepeatable() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let table = try C.run(try Self.args(dir, db: "a.sqlite", ["--atp-star-bound", "--bound-top", "4", "--bound-subsets", "3"]))
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains("AtP* bound on missed effects (95% upper confidence; top 4 by mean AtP* verified; 3 subsets per prompt"))
        func bounds(_ db: String, seed: String) throws -> [String: Any] {
            let r = try C.run(try Self.args(dir, db: db, ["--atp-star-bound", "--bound-top", "4", "--bound-subsets", "3", "--bound-seed", seed, "--json"]))
            #expect(r.status == 0, "\(r.stderr)")
            let run = ((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["runs"] as! [[String: Any]])[0]
            var out: [String: Any] = [:]
            for b in run["atp_star_bound"] as! [[String: Any]] { out[b["site"] as! String] = (b["values"] as! [String: Any])["bound"] }
            return out
        }
        let a = try bounds("b.sqlite", seed: "5"), b = try bounds("c.sqlite", seed: "5")
        #expect(Set(a.keys) == ["mlp_out", "z"])
        #expect(a["z"] as? Double != nil && a["z"] as? Double == b["z"] as? Double && a["mlp_out"] as? Double == b["mlp_out"] as? Double)
    }

    @Test func badSettingsAreOneLineErrorsThatStoreNothing() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [([String], String)] = [
            (["--atp-star-bound", "--bound-subsets", "1"], "--bound-subsets"),
            (["--atp-star-bound", "--bound-subsets", "-3"], "--bound-subsets"),
            (["--atp-star-bound", "--bound-inclusion", "1"], "--bound-inclusion"),
            (["--atp-star-bound", "--bound-inclusion", "nan"], "--bound-inclusion"),
            (["--atp-star-bound", "--bound-confidence", "0"], "--bound-confidence"),
            (["--atp-star-bound", "--bound-confidence", "inf"], "--bound-confidence"),
            (["--atp-star-bound", "--bound-top", "-1"], "--bound-top"),
            (["--atp-star-bound", "--bound-seed", "-1"], "--bound-seed"),
            (["--bound-top", "3"], "--atp-star-bound"),
            (["--atp-star-bound", "--shard", "0/2"], "--shard"),
            (["--atp-star-bound", "--sites", "z,resid_pre"], "--sites"),
            (["--atp-star-bound", "--sites", "resid_mid"], "resid_mid"),
        ]
        for (extra, option) in cases {
            try C.expectOneLineError(try Self.args(dir, db: "r.sqlite", extra), mentions: [option])
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("r.sqlite").path), "\(extra) created the database")
        }
        var noStar = try Self.args(dir, db: "r.sqlite", ["--atp-star-bound"])
        noStar[noStar.firstIndex(of: "activation,atp-star")!] = "activation,atp"
        try C.expectOneLineError(noStar, mentions: ["--atp-star-bound", "atp-star"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("r.sqlite").path))
    }
}

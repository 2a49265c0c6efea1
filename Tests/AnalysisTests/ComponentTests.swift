import Analysis
import Foundation
import Testing

/// The typed keys of Analysis and the strings the store keeps for them: every value written is
/// read back as itself, and strings lnlens never writes are refused rather than misread.
@Suite struct ComponentTests {
    @Test func everyComponentRoundTripsThroughItsNameAndJSON() throws {
        let all = Component.all(nLayers: 12, nHeads: 12) + [.residPost]
        for c in all {
            #expect(Component(name: c.description) == c)
            let json = try JSONEncoder().encode([c])
            #expect(String(decoding: json, as: UTF8.self) == "[\"\(c.description)\"]")
            #expect(try JSONDecoder().decode([Component].self, from: json) == [c])
            let site = c.site
            #expect(Component(site: site.name, layer: site.layer, head: site.head) == c)
        }
        #expect(Set(all.map(\.description)).count == all.count)
        #expect(all == all.sorted())
    }

    @Test(arguments: ["", "L", "L3", "LH2", "L3H", "L-1H2", "L3H+2", "l3h2", "L3H2 ", " L3H2", "L٣H2", "L3_mlp_", "L_bO", "H2",
                      "embeds"])
    func namesLnlensNeverWritesAreRefused(name: String) {
        #expect(Component(name: name) == nil)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([Component].self, from: Data("[\"\(name)\"]".utf8)) }
    }

    @Test func headSetKeysRoundTrip() {
        let sets: [HeadSet] = [.all, .layer(0), .layer(11), .head(layer: 0, head: 0), .head(layer: 11, head: 10)]
        for s in sets { #expect(HeadSet(key: s.description) == s) }
        #expect(sets.map(\.description) == ["all", "L0", "L11", "L0H0", "L11H10"])
        #expect(HeadSet.head(layer: 3, head: 2).component == .head(layer: 3, head: 2))
        for key in ["", "L", "L3_mlp", "embed", "L-1", "L3H", "All"] { #expect(HeadSet(key: key) == nil) }
    }

    /// The names runs store for these values (`results.site`, `estimator_errors.site/method/metric`):
    /// databases written before the values were typed must still read.
    @Test func storedNamesAreTheOnesRunsAlwaysWrote() {
        #expect(ErrorMetric.allCases.map(\.rawValue) == ["nmae", "pearson", "spearman", "sign_agreement", "topk_recall_10",
                                                         "topk_recall_5pct", "n", "n_structural_zeros"])
        #expect(PatchMethod.allCases.map(\.rawValue) == ["activation", "atp", "atp_star"])
        #expect(PatchSite.allCases.map(\.rawValue) == ["resid_pre", "resid_mid", "attn_out", "mlp_out", "z", "q", "k", "v",
                                                       "z_by_pos", "q_by_pos", "k_by_pos", "v_by_pos", "pattern", "pattern_by_pos"])
    }
}

import Foundation
import Jobs
import Testing

/// The one reader of stored options: values read the same however they were parsed or stored
/// (the run-options fuzz target found nested objects reading differently on each parse).
@Suite struct RunOptionsTests {
    @Test func valuesAreCanonical() {
        let nested = #"{"model": {"b": 1, "a": [2, {"y": 3, "x": 4}]}, "db": "x.sqlite"}"#
        let first = RunOptions.values(nested)
        for _ in 0..<20 { #expect(RunOptions.values(RunOptions.setting(nested, ["db": "y.sqlite"]))["model"] == first["model"]) }
        #expect(first["model"] == #"{"a":[2,{"x":4,"y":3}],"b":1}"#)
        // Numbers and booleans match the same values stored as text by older lnlens.
        let old = RunOptions.values(#"{"context": "128", "prepend_bos": "true", "min_gap": "0.5"}"#)
        let new = RunOptions.values(#"{"context": 128, "prepend_bos": true, "min_gap": 0.5}"#)
        #expect(old == new, "\(old) vs \(new)")
        #expect(RunOptions.values(#"{"a": 1, "b": 2}"#, keys: ["b", "c"]) == ["b": "2"])
        #expect(RunOptions.values("not json").isEmpty)
    }
}

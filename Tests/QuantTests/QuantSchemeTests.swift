import Quant
import XCTest

final class QuantSchemeTests: XCTestCase {
    func testParsesTheFieldsNotation() throws {
        XCTAssertEqual(try QuantScheme.parse("w3g128"), QuantScheme(weightBits: 3, groupSize: 128, symmetric: false))
        XCTAssertEqual(try QuantScheme.parse("W4G128-sym"), QuantScheme(weightBits: 4, groupSize: 128, symmetric: true))
        XCTAssertEqual(try QuantScheme.parse("w4"), QuantScheme(weightBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w8-asym"), QuantScheme(weightBits: 8))
        XCTAssertEqual(try QuantScheme.parse("w2g64"), QuantScheme(weightBits: 2, groupSize: 64))
        XCTAssertEqual(try QuantScheme.parse("w4a4kv4"), QuantScheme(weightBits: 4, activationBits: 4, kvBits: 4))
        XCTAssertEqual(try QuantScheme.parse("w4-a8-kv8-sym"), QuantScheme(weightBits: 4, symmetric: true, activationBits: 8, kvBits: 8))
        XCTAssertEqual(try QuantScheme.parse("a8"), QuantScheme(weightBits: nil, activationBits: 8))
        // The description parses back to the same scheme.
        for text in ["w3g128", "w4g128-sym", "w4", "w4a4kv4", "a8kv4"] {
            let s = try QuantScheme.parse(text)
            XCTAssertEqual(try QuantScheme.parse(s.description), s, text)
        }
    }

    func testRejectsUnsupportedAndListsValidForms() {
        for bad in ["w5g128", "w3g100", "w4a2", "kv3", "", "int4", "w4g", "w4w4", "sym", "w3g128-sym-asym"] {
            XCTAssertThrowsError(try QuantScheme.parse(bad), bad) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("Valid:") && message.contains("w3g128"), message)
            }
        }
    }
}

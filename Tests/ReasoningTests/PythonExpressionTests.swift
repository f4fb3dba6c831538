import TestSupport
import XCTest
@testable import Reasoning

/// A value as the reference script types it: `{"int": 3}`, `{"float": "2.5"}`, `{"fraction": [1, 3]}`, ...
struct TypedPythonValue: Decodable {
    let value: PythonValue

    private enum Keys: String, CodingKey { case int, float, fraction, str, bool, none, list, tuple }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        if let i = try c.decodeIfPresent(Int.self, forKey: .int) { value = .int(i) }
        else if let x = try c.decodeIfPresent(String.self, forKey: .float) { value = .float(PythonFormat.parseFloat(x)!) }
        else if let f = try c.decodeIfPresent([Int].self, forKey: .fraction) { value = .fraction(try PythonFraction(f[0], f[1])) }
        else if let s = try c.decodeIfPresent(String.self, forKey: .str) { value = .string(s) }
        else if let b = try c.decodeIfPresent(Bool.self, forKey: .bool) { value = .bool(b) }
        else if c.contains(.none) { value = .none }
        else if let l = try c.decodeIfPresent([TypedPythonValue].self, forKey: .list) { value = .list(l.map(\.value)) }
        else { value = .tuple(try c.decode([TypedPythonValue].self, forKey: .tuple).map(\.value)) }
    }
}

final class PythonExpressionTests: XCTestCase {
    private func eval(_ source: String, _ variables: [String: PythonValue] = [:]) throws -> PythonValue {
        try PythonExpression.parse(source).evaluate(in: PythonEnvironment(variables: variables))
    }

    private func printed(_ source: String, _ variables: [String: PythonValue] = [:]) throws -> String {
        try eval(source, variables).printed
    }

    func testFloorDivisionAndModuloRoundTowardNegativeInfinity() throws {
        XCTAssertEqual(try eval("-7 // 2"), .int(-4))
        XCTAssertEqual(try eval("-7 % 2"), .int(1))
        XCTAssertEqual(try eval("7 // -2"), .int(-4))
        XCTAssertEqual(try eval("7 % -2"), .int(-1))
        XCTAssertEqual(try eval("-7.5 // 2"), .float(-4))
        XCTAssertEqual(try eval("-7.5 % 2"), .float(0.5))
        XCTAssertEqual(try eval("7 % -2.5"), .float(-0.5))
    }

    func testTrueDivisionGivesFloatsThatPrintAsPythonDoes() throws {
        XCTAssertEqual(try eval("7 / 2"), .float(3.5))
        XCTAssertEqual(try eval("4 / 2"), .float(2))
        XCTAssertEqual(try printed("4 / 2"), "2.0")
        XCTAssertEqual(GSMValues.slotPrinted(try eval("4 / 2")), "2")  // a solution slot prints it as an int
        XCTAssertEqual(try printed("0.1 + 0.2"), "0.30000000000000004")
        XCTAssertEqual(try printed("1e16"), "1e+16")
        XCTAssertEqual(try printed("2.0 ** 53"), "9007199254740992.0")
        XCTAssertEqual(try printed("1e-05"), "1e-05")
        XCTAssertEqual(try printed("0.0001"), "0.0001")
    }

    func testFractionsStayExactWithIntsAndBecomeFloatsWithFloats() throws {
        let third = PythonValue.fraction(try PythonFraction(1, 3))
        XCTAssertEqual(try eval("f + f", ["f": third]), .fraction(try PythonFraction(2, 3)))
        XCTAssertEqual(try printed("f * 3", ["f": third]), "1")
        XCTAssertEqual(try eval("f + 0.5", ["f": third]), .float(1.0 / 3.0 + 0.5))
        XCTAssertEqual(try eval("f == 1/3", ["f": third]), .bool(false))  // exact, as Python compares
        XCTAssertEqual(try eval("f * 6 == 2", ["f": third]), .bool(true))
        XCTAssertEqual(try eval("Fraction(200/250)"), .string("4/5"))  // the package's formatter
    }

    func testChainedComparisonsAndConditionalExpressions() throws {
        XCTAssertEqual(try eval("1 < 2 < 3"), .bool(true))
        XCTAssertEqual(try eval("3 > 2 > 2"), .bool(false))
        XCTAssertEqual(try eval("1 < 3 > 2"), .bool(true))
        XCTAssertEqual(try eval("'a' if 1 > 2 else 'b'"), .string("b"))
        XCTAssertEqual(try eval("1 if False else 2 if False else 3"), .int(3))
        XCTAssertEqual(try eval("(7 if p == 'week' else 30) * 2", ["p": .string("month")]), .int(60))
    }

    func testPrecedenceFollowsPython() throws {
        XCTAssertEqual(try eval("-2 ** 2"), .int(-4))
        XCTAssertEqual(try eval("2 ** 3 ** 2"), .int(512))
        XCTAssertEqual(try eval("2 ** -1"), .float(0.5))
        XCTAssertEqual(try eval("10 - 3 - 2"), .int(5))
        XCTAssertEqual(try eval("not 1 == 2"), .bool(true))
        XCTAssertEqual(try eval("1, 2"), .tuple([.int(1), .int(2)]))
    }

    func testRefusesWhatIsNotAnExpressionOfTheTemplates() {
        for source in ["lambda x: x", "a.b", "f(x=1)", "1 +", "(1", "x in L", "[i for i in L]", "import os", "a = 1", "2x", "'''doc'''"] {
            XCTAssertThrowsError(try PythonExpression.parse(source), source) { error in
                XCTAssertEqual((error as? PythonError)?.kind, .syntax, "\(source): \(error)")
            }
        }
        XCTAssertThrowsError(try eval("open('f')")) { XCTAssertEqual(($0 as? PythonError)?.kind, .name) }
        XCTAssertThrowsError(try eval("x(1)", ["x": .int(3)])) { XCTAssertEqual(($0 as? PythonError)?.kind, .type) }
        XCTAssertThrowsError(try eval("2 ** 64")) { XCTAssertEqual(($0 as? PythonError)?.kind, .overflow) }
    }

    /// Every case of python-expressions.json, evaluated by Python itself (scripts/reference/gsm_symbolic.py).
    func testAgreesWithPythonOnTheReferenceCases() throws {
        struct Case: Decodable { let source: String; let value: TypedPythonValue?; let printed: String?; let error: String? }
        struct Fixture: Decodable { let variables: [String: TypedPythonValue]; let cases: [Case] }
        let fixture = try TestPaths.loadJSON(Fixture.self, fixture: "python-expressions.json")
        let variables = fixture.variables.mapValues(\.value)
        XCTAssertGreaterThan(fixture.cases.count, 150)
        for c in fixture.cases {
            do {
                let value = try eval(c.source, variables)
                if let error = c.error {
                    XCTFail("\(c.source): Python raises \(error), got \(value.represented)")
                    continue
                }
                XCTAssertEqual(value, c.value?.value, "\(c.source): \(value.represented)")
                XCTAssertEqual(value.printed, c.printed, c.source)
            } catch let e as PythonError {
                XCTAssertEqual(e.kind.rawValue, c.error, "\(c.source): \(e)")
            }
        }
    }

    func testFractionLimitsItsDenominatorAsPythonDoes() throws {
        XCTAssertEqual(try PythonFraction(exactly: 3.141592653589793)!.limitingDenominator().description, "3126535/995207")
        XCTAssertEqual(try PythonFraction(exactly: 0.1)!.limitingDenominator(to: 10).description, "1/10")
        XCTAssertEqual(PythonFraction(exactly: 0.75)?.description, "3/4")
        XCTAssertEqual(PythonFraction(exactly: -6.0)?.description, "-6")
        XCTAssertNil(PythonFraction(exactly: 1e-300))
    }
}

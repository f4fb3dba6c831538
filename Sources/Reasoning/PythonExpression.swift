import Foundation

// A safe evaluator of the small Python expressions in the GSM-Symbolic templates (`#init`,
// `#conditions`, `#answer` and the `{...}` slots of the worked solutions): a tokenizer, a
// precedence-climbing parser into `PythonExpression`, and a tree-walking evaluator over
// `PythonValue`s with Python's semantics (integer floor division and modulo toward negative
// infinity, true division giving floats, exact `Fraction`s, chained comparisons, shortest
// round-trip float printing). Nothing is executed but the operators and the functions an
// environment names; integers are 64-bit, and an overflow is an error rather than a wrong value.

// MARK: - Values

/// An exact rational in lowest terms with a positive denominator (Python's `fractions.Fraction`).
package struct PythonFraction: Hashable, Sendable, CustomStringConvertible {
    package let numerator: Int
    package let denominator: Int

    package init(_ numerator: Int, _ denominator: Int = 1) throws {
        guard denominator != 0 else { throw PythonError(.zeroDivision, "Fraction(\(numerator), 0)") }
        let g = gcd(numerator, denominator)
        var n = numerator / g, d = denominator / g
        if d < 0 {
            guard n != Int.min, d != Int.min else { throw PythonError.overflow }
            n = -n; d = -d
        }
        self.numerator = n
        self.denominator = d
    }

    /// The exact value of a finite double when numerator and denominator fit 63 bits.
    package init?(exactly x: Double) {
        guard x.isFinite else { return nil }
        if x == 0 { self.numerator = 0; self.denominator = 1; return }
        var significand = Int(x.significandBitPattern), exponent = -1074
        if x.isNormal {
            significand |= 1 << 52
            exponent = Int(x.exponent) - 52
        }
        while significand & 1 == 0 && exponent < 0 { significand >>= 1; exponent += 1 }
        let sign = x < 0 ? -1 : 1
        if exponent >= 0 {
            guard (Int.bitWidth - significand.leadingZeroBitCount) + exponent <= 62 else { return nil }
            self.numerator = sign * (significand << exponent)
            self.denominator = 1
        } else {
            guard -exponent <= 62 else { return nil }
            self.numerator = sign * significand
            self.denominator = 1 << -exponent
        }
    }

    package var description: String { denominator == 1 ? "\(numerator)" : "\(numerator)/\(denominator)" }
    package var doubleValue: Double { Double(numerator) / Double(denominator) }
    package var isInteger: Bool { denominator == 1 }

    /// The closest fraction with a denominator at most `maximum` (Python's `limit_denominator`).
    package func limitingDenominator(to maximum: Int = 1_000_000) throws -> PythonFraction {
        if denominator <= maximum { return self }
        var (p0, q0, p1, q1) = (0, 1, 1, 0)
        var n = numerator, d = denominator
        while true {
            let a = floorDivide(n, d)
            let (aq1, o1) = a.multipliedReportingOverflow(by: q1)
            let (q2, o2) = q0.addingReportingOverflow(aq1)
            if o1 || o2 || q2 > maximum { break }
            let p2 = try checkedAdd(p0, try checkedMultiply(a, p1))
            let remainder = try checkedSubtract(n, try checkedMultiply(a, d))
            (p0, q0, p1, q1) = (p1, q1, p2, q2)
            (n, d) = (d, remainder)
        }
        let k = (maximum - q0) / q1
        // Python 3.12: the nearer of the two bounds, p1/q1 on a tie; 2*d*(q0 + k*q1) <= denominator.
        let scaled = (q0 + k * q1).multipliedFullWidth(by: 2 * d)
        let bound2Closer = scaled.high < 0 || (scaled.high == 0 && scaled.low <= UInt(denominator))
        if bound2Closer { return try PythonFraction(p1, q1) }
        return try PythonFraction(try checkedAdd(p0, try checkedMultiply(k, p1)), q0 + k * q1)
    }

    func adding(_ o: PythonFraction) throws -> PythonFraction {
        let g = gcd(denominator, o.denominator)
        let left = try checkedMultiply(numerator, o.denominator / g)
        let right = try checkedMultiply(o.numerator, denominator / g)
        return try PythonFraction(try checkedAdd(left, right), try checkedMultiply(denominator / g, o.denominator))
    }

    func negated() throws -> PythonFraction {
        guard numerator != Int.min else { throw PythonError.overflow }
        return try PythonFraction(-numerator, denominator)
    }

    func multiplying(_ o: PythonFraction) throws -> PythonFraction {
        let g1 = gcd(numerator, o.denominator), g2 = gcd(o.numerator, denominator)
        return try PythonFraction(try checkedMultiply(numerator / g1, o.numerator / g2),
                                  try checkedMultiply(denominator / g2, o.denominator / g1))
    }

    func reciprocal() throws -> PythonFraction {
        guard numerator != 0 else { throw PythonError(.zeroDivision, "Fraction(\(denominator), 0)") }
        return try PythonFraction(denominator, numerator)
    }

    /// floor(self / o) (Python's `Fraction.__floordiv__`).
    func floorDivided(by o: PythonFraction) throws -> Int {
        guard o.numerator != 0 else { throw PythonError(.zeroDivision, "division by zero") }
        return floorDivide(try checkedMultiply(numerator, o.denominator), try checkedMultiply(denominator, o.numerator))
    }

    func remainder(dividingBy o: PythonFraction) throws -> PythonFraction {
        guard o.numerator != 0 else { throw PythonError(.zeroDivision, "division by zero") }
        let a = try checkedMultiply(numerator, o.denominator), b = try checkedMultiply(o.numerator, denominator)
        return try PythonFraction(floorModulo(a, b), try checkedMultiply(denominator, o.denominator))
    }

    func power(_ exponent: Int) throws -> PythonFraction {
        if exponent < 0 { return try reciprocal().power(-exponent) }
        return try PythonFraction(try checkedPower(numerator, exponent), try checkedPower(denominator, exponent))
    }

    /// Python's `round(fraction)`: to the nearest integer, ties to even.
    func roundedToEven() -> Int {
        let floor = floorDivide(numerator, denominator)
        let twiceRemainder = 2 * floorModulo(numerator, denominator)
        if twiceRemainder < denominator { return floor }
        if twiceRemainder > denominator { return floor + 1 }
        return floor % 2 == 0 ? floor : floor + 1
    }
}

/// A value of the evaluator. `Equatable` compares structure (so `.int(1) != .float(1)`); Python's
/// `==` is `PythonValue.equal(_:_:)`.
package indirect enum PythonValue: Equatable, Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case fraction(PythonFraction)
    case string(String)
    case list([PythonValue])
    case tuple([PythonValue])

    package var typeName: String {
        switch self {
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .float: "float"
        case .fraction: "Fraction"
        case .string: "str"
        case .list: "list"
        case .tuple: "tuple"
        }
    }

    /// Python's `bool(value)`.
    package var isTruthy: Bool {
        switch self {
        case .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .float(let x): x != 0
        case .fraction(let f): f.numerator != 0
        case .string(let s): !s.isEmpty
        case .list(let items), .tuple(let items): !items.isEmpty
        }
    }

    /// The elements of a list or tuple (a string's code points as strings), for `min`, `sum`, `sample`...
    package func elements(for function: String) throws -> [PythonValue] {
        switch self {
        case .list(let items), .tuple(let items): return items
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        default: throw PythonError(.type, "\(function)(): '\(typeName)' object is not iterable")
        }
    }

    /// What Python's `str(value)` prints (the form f-string slots use).
    package var printed: String {
        switch self {
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .float(let x): PythonFormat.repr(x)
        case .fraction(let f): f.description
        case .string(let s): s
        case .list, .tuple: represented
        }
    }

    /// What Python's `repr(value)` prints.
    package var represented: String {
        switch self {
        case .string(let s): PythonFormat.repr(s)
        case .fraction(let f): "Fraction(\(f.numerator), \(f.denominator))"
        case .list(let items): "[" + items.map(\.represented).joined(separator: ", ") + "]"
        case .tuple(let items):
            items.count == 1 ? "(\(items[0].represented),)" : "(" + items.map(\.represented).joined(separator: ", ") + ")"
        default: printed
        }
    }
}

/// An error Python would raise, named as Python names it (`ZeroDivisionError: division by zero`).
package struct PythonError: Error, Equatable, CustomStringConvertible {
    package enum Kind: String, Sendable {
        case syntax = "SyntaxError", name = "NameError", type = "TypeError", value = "ValueError"
        case zeroDivision = "ZeroDivisionError", overflow = "OverflowError", index = "IndexError"
    }
    package let kind: Kind
    package let message: String

    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    static let overflow = PythonError(.overflow, "integer beyond 64 bits (this evaluator's limit)")

    package var description: String { "\(kind.rawValue): \(message)" }
}

// MARK: - Integer helpers (Python's floor semantics, overflow as an error)

func gcd(_ a: Int, _ b: Int) -> Int {
    var x = a.magnitude, y = b.magnitude
    while y != 0 { (x, y) = (y, x % y) }
    return x == 0 ? 1 : Int(truncatingIfNeeded: x)
}

/// a // b, rounding toward negative infinity; b != 0.
func floorDivide(_ a: Int, _ b: Int) -> Int {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

/// a % b with the sign of b; b != 0.
func floorModulo(_ a: Int, _ b: Int) -> Int {
    let r = a % b
    return (r != 0 && (r < 0) != (b < 0)) ? r + b : r
}

func checkedAdd(_ a: Int, _ b: Int) throws -> Int {
    let (r, o) = a.addingReportingOverflow(b)
    if o { throw PythonError.overflow }
    return r
}

func checkedSubtract(_ a: Int, _ b: Int) throws -> Int {
    let (r, o) = a.subtractingReportingOverflow(b)
    if o { throw PythonError.overflow }
    return r
}

func checkedMultiply(_ a: Int, _ b: Int) throws -> Int {
    let (r, o) = a.multipliedReportingOverflow(by: b)
    if o { throw PythonError.overflow }
    return r
}

func checkedPower(_ base: Int, _ exponent: Int) throws -> Int {
    var result = 1, b = base, e = exponent
    while e > 0 {
        if e & 1 == 1 { result = try checkedMultiply(result, b) }
        e >>= 1
        if e > 0 { b = try checkedMultiply(b, b) }
    }
    return result
}

// MARK: - Printing and rounding as Python does

package enum PythonFormat {
    /// `repr(float)`: the shortest digits that read back to `x` (Swift finds the same ones),
    /// laid out as Python does: positional when the decimal exponent is in [-4, 16), else
    /// `d.ddde+XX`; integral values keep a `.0`.
    package static func repr(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x < 0 ? "-inf" : "inf" }
        if x == 0 { return x.sign == .minus ? "-0.0" : "0.0" }
        let (digits, point) = shortestDigits(x.magnitude)
        let sign = x < 0 ? "-" : ""
        // `point`: the value is 0.d1d2... x 10^point.
        if point > -4 && point <= 16 {
            if point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + digits }
            if point >= digits.count { return sign + digits + String(repeating: "0", count: point - digits.count) + ".0" }
            let cut = digits.index(digits.startIndex, offsetBy: point)
            return sign + digits[..<cut] + "." + digits[cut...]
        }
        let exponent = point - 1
        let mantissa = digits.count == 1 ? digits : String(digits.prefix(1)) + "." + digits.dropFirst()
        let e = String(exponent.magnitude)
        return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + (e.count < 2 ? "0" + e : e)
    }

    /// The significant digits (no leading or trailing zeros) of Swift's shortest round-trip
    /// description, and the decimal point position.
    private static func shortestDigits(_ x: Double) -> (String, Int) {
        let text = x.description  // "123.45", "1e-05", "1.2345e+16"
        var mantissa = Substring(text), exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...])!
        }
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        let whole = String(parts[0]), fractional = parts.count > 1 ? String(parts[1]) : ""
        var digits = whole + fractional
        var point = whole.count + exponent
        while digits.hasPrefix("0") { digits.removeFirst(); point -= 1 }
        while digits.hasSuffix("0") { digits.removeLast() }
        return (digits, point)
    }

    /// `repr(str)`: single quotes unless the text holds a single quote and no double quote.
    package static func repr(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if Character(c) == quote { out += "\\" + String(quote) }
                else if c.value < 0x20 || c.value == 0x7F { out += String(format: "\\x%02x", c.value) }
                else { out.unicodeScalars.append(c) }
            }
        }
        out.append(quote)
        return out
    }

    /// `round(x, ndigits)` for a float: the decimal rounding of the exact binary value, ties to
    /// even (what Python's dtoa-based rounding and C's printf both do), read back as a double.
    package static func round(_ x: Double, digits: Int) -> Double {
        guard x.isFinite, x != 0 else { return x }
        if digits > 300 { return x }
        if digits >= 0 { return Double(String(format: "%.\(digits)f", x)) ?? x }
        let scale = pow(10.0, Double(-digits))
        return (x / scale).rounded(.toNearestOrEven) * scale
    }

    /// Python's `float(str)`: optional sign, digits with an optional point and exponent, or
    /// inf/infinity/nan, surrounding whitespace allowed, single underscores between digits.
    package static func parseFloat(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var body = Substring(t)
        var negative = false
        if let first = body.first, first == "+" || first == "-" { negative = first == "-"; body = body.dropFirst() }
        switch body.lowercased() {
        case "inf", "infinity": return negative ? -.infinity : .infinity
        case "nan": return .nan
        default: break
        }
        guard validDigitGroups(body) else { return nil }
        let cleaned = body.replacingOccurrences(of: "_", with: "")
        var sawDigit = false, sawPoint = false, sawExponent = false, exponentDigits = false
        var previous: Character = " "
        for c in cleaned {
            if c.isASCII && c.isNumber {
                if sawExponent { exponentDigits = true } else { sawDigit = true }
            } else if c == "." {
                if sawPoint || sawExponent { return nil }
                sawPoint = true
            } else if c == "e" || c == "E" {
                if sawExponent || !sawDigit { return nil }
                sawExponent = true
            } else if c == "+" || c == "-" {
                if previous != "e" && previous != "E" { return nil }
            } else {
                return nil
            }
            previous = c
        }
        guard sawDigit, !sawExponent || exponentDigits, let value = Double(cleaned) else { return nil }
        return negative ? -value : value
    }

    /// Python's `int(str)` (base 10).
    package static func parseInt(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var body = Substring(t)
        var negative = false
        if let first = body.first, first == "+" || first == "-" { negative = first == "-"; body = body.dropFirst() }
        guard !body.isEmpty, body.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "_" }), validDigitGroups(body),
              let value = Int(body.replacingOccurrences(of: "_", with: "")) else { return nil }
        return negative ? -value : value
    }

    /// Underscores only single and between digits.
    private static func validDigitGroups(_ s: Substring) -> Bool {
        let chars = Array(s)
        for (i, c) in chars.enumerated() where c == "_" {
            guard i > 0, i + 1 < chars.count, chars[i - 1].isNumber, chars[i + 1].isNumber else { return false }
        }
        return true
    }
}

// MARK: - Arithmetic and comparison

package enum PythonBinaryOperator: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", floorDivide = "//", modulo = "%", power = "**"
}

package enum PythonComparisonOperator: String, Sendable {
    case less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">=", equal = "==", notEqual = "!="
}

package enum PythonUnaryOperator: String, Sendable {
    case negate = "-", plus = "+", not = "not"
}

/// A number as arithmetic sees it (bools are integers).
private enum Number {
    case int(Int), fraction(PythonFraction), float(Double)

    init?(_ v: PythonValue) {
        switch v {
        case .bool(let b): self = .int(b ? 1 : 0)
        case .int(let i): self = .int(i)
        case .fraction(let f): self = .fraction(f)
        case .float(let x): self = .float(x)
        default: return nil
        }
    }

    var double: Double {
        switch self {
        case .int(let i): Double(i)
        case .fraction(let f): f.doubleValue
        case .float(let x): x
        }
    }

    var fraction: PythonFraction? {
        switch self {
        case .int(let i): try? PythonFraction(i)
        case .fraction(let f): f
        case .float: nil
        }
    }
}

extension PythonValue {
    /// `a op b` with Python's rules: int op int stays int except `/` (float) and `**` with a
    /// negative exponent; a Fraction with ints or Fractions stays exact; a float makes it float.
    package static func binary(_ op: PythonBinaryOperator, _ a: PythonValue, _ b: PythonValue) throws -> PythonValue {
        switch (op, a, b) {
        case (.add, .string(let x), .string(let y)): return .string(x + y)
        case (.add, .list(let x), .list(let y)): return .list(x + y)
        case (.add, .tuple(let x), .tuple(let y)): return .tuple(x + y)
        case (.multiply, .string(let s), _), (.multiply, _, .string(let s)):
            guard let n = integerOperand(a) ?? integerOperand(b) else { break }
            return .string(n > 0 ? String(repeating: s, count: n) : "")
        case (.multiply, .list(let items), _), (.multiply, _, .list(let items)):
            guard let n = integerOperand(a) ?? integerOperand(b) else { break }
            return .list(n > 0 ? Array([[PythonValue]](repeating: items, count: n).joined()) : [])
        default: break
        }
        guard let x = Number(a), let y = Number(b) else {
            throw PythonError(.type, "unsupported operand type(s) for \(op.rawValue): '\(a.typeName)' and '\(b.typeName)'")
        }
        switch (x, y) {
        case (.int(let i), .int(let j)): return try integerOperation(op, i, j)
        case (.float, _), (_, .float): return try floatOperation(op, x.double, y.double)
        default: return try fractionOperation(op, x, y)
        }
    }

    /// An int or bool operand (what sequence repetition and indexing accept).
    private static func integerOperand(_ v: PythonValue) -> Int? {
        switch v {
        case .int(let i): i
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    private static func integerOperation(_ op: PythonBinaryOperator, _ a: Int, _ b: Int) throws -> PythonValue {
        switch op {
        case .add: return .int(try checkedAdd(a, b))
        case .subtract: return .int(try checkedSubtract(a, b))
        case .multiply: return .int(try checkedMultiply(a, b))
        case .divide:
            guard b != 0 else { throw PythonError(.zeroDivision, "division by zero") }
            return .float(Double(a) / Double(b))
        case .floorDivide, .modulo:
            guard b != 0 else { throw PythonError(.zeroDivision, "integer division or modulo by zero") }
            if a == Int.min && b == -1 { if op == .modulo { return .int(0) }; throw PythonError.overflow }
            return .int(op == .floorDivide ? floorDivide(a, b) : floorModulo(a, b))
        case .power:
            if b >= 0 { return .int(try checkedPower(a, b)) }
            guard a != 0 else { throw PythonError(.zeroDivision, "0.0 cannot be raised to a negative power") }
            return .float(Foundation.pow(Double(a), Double(b)))
        }
    }

    private static func floatOperation(_ op: PythonBinaryOperator, _ a: Double, _ b: Double) throws -> PythonValue {
        switch op {
        case .add: return .float(a + b)
        case .subtract: return .float(a - b)
        case .multiply: return .float(a * b)
        case .divide:
            guard b != 0 else { throw PythonError(.zeroDivision, "float division by zero") }
            return .float(a / b)
        case .floorDivide, .modulo:
            guard b != 0 else { throw PythonError(.zeroDivision, op == .modulo ? "float modulo" : "float floor division by zero") }
            let (quotient, remainder) = floatDivmod(a, b)
            return .float(op == .floorDivide ? quotient : remainder)
        case .power:
            if a == 0 && b < 0 { throw PythonError(.zeroDivision, "0.0 cannot be raised to a negative power") }
            if a < 0 && b != b.rounded() { throw PythonError(.value, "a negative number to a fractional power is complex") }
            let result = Foundation.pow(a, b)
            if result.isInfinite && a.isFinite && b.isFinite { throw PythonError(.overflow, "(34, 'Numerical result out of range')") }
            return .float(result)
        }
    }

    /// CPython's float_divmod: the remainder takes the divisor's sign, the quotient is floored.
    private static func floatDivmod(_ a: Double, _ b: Double) -> (Double, Double) {
        var mod = fmod(a, b)
        var div = (a - mod) / b
        if mod != 0 {
            if (b < 0) != (mod < 0) { mod += b; div -= 1 }
        } else {
            mod = Double(signOf: b, magnitudeOf: 0)
        }
        var floorDiv: Double
        if div != 0 {
            floorDiv = div.rounded(.down)
            if div - floorDiv > 0.5 { floorDiv += 1 }
        } else {
            floorDiv = Double(signOf: a / b, magnitudeOf: 0)
        }
        return (floorDiv, mod)
    }

    private static func fractionOperation(_ op: PythonBinaryOperator, _ x: Number, _ y: Number) throws -> PythonValue {
        guard let a = x.fraction, let b = y.fraction else { throw PythonError.overflow }
        switch op {
        case .add: return .fraction(try a.adding(b))
        case .subtract: return .fraction(try a.adding(try b.negated()))
        case .multiply: return .fraction(try a.multiplying(b))
        case .divide: return .fraction(try a.multiplying(try b.reciprocal()))
        case .floorDivide: return .int(try a.floorDivided(by: b))
        case .modulo: return .fraction(try a.remainder(dividingBy: b))
        case .power:
            guard b.isInteger else { return try floatOperation(.power, a.doubleValue, b.doubleValue) }
            // Python keeps an int base an int for a non-negative integral Fraction exponent.
            if case .int(let i) = x, b.numerator >= 0 { return .int(try checkedPower(i, b.numerator)) }
            return .fraction(try a.power(b.numerator))
        }
    }

    /// Python's `==` (numbers compare by value across int, float and Fraction; other kinds
    /// compare equal only to their own kind).
    package static func equal(_ a: PythonValue, _ b: PythonValue) -> Bool {
        if let x = Number(a), let y = Number(b) { return compareNumbers(x, y) == .orderedSame }
        switch (a, b) {
        case (.none, .none): return true
        case (.string(let x), .string(let y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        default: return false
        }
    }

    /// The result of `a op b` for one comparison.
    package static func compare(_ op: PythonComparisonOperator, _ a: PythonValue, _ b: PythonValue) throws -> Bool {
        switch op {
        case .equal: return equal(a, b)
        case .notEqual: return !equal(a, b)
        default: break
        }
        guard let order = try ordering(a, b, op) else { return false }  // NaN: every ordering is false
        switch op {
        case .less: return order == .orderedAscending
        case .lessOrEqual: return order != .orderedDescending
        case .greater: return order == .orderedDescending
        case .greaterOrEqual: return order != .orderedAscending
        case .equal, .notEqual: return false
        }
    }

    private static func ordering(_ a: PythonValue, _ b: PythonValue, _ op: PythonComparisonOperator) throws -> ComparisonResult? {
        if let x = Number(a), let y = Number(b) { return compareNumbers(x, y) }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? .orderedAscending
                : (x.unicodeScalars.elementsEqual(y.unicodeScalars) ? .orderedSame : .orderedDescending)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (u, v) in zip(x, y) where !equal(u, v) { return try ordering(u, v, op) }
            return x.count == y.count ? .orderedSame : (x.count < y.count ? .orderedAscending : .orderedDescending)
        default:
            throw PythonError(.type, "'\(op.rawValue)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    /// Exact where it can be (ints, Fractions, floats that are exact 64-bit fractions), by
    /// doubles otherwise; nil when a NaN is involved.
    private static func compareNumbers(_ x: Number, _ y: Number) -> ComparisonResult? {
        func order<T: Comparable>(_ p: T, _ q: T) -> ComparisonResult {
            p < q ? .orderedAscending : (p == q ? .orderedSame : .orderedDescending)
        }
        switch (x, y) {
        case (.int(let i), .int(let j)): return order(i, j)
        case (.float(let p), _) where p.isNaN: return nil
        case (_, .float(let q)) where q.isNaN: return nil
        default: break
        }
        func exact(_ n: Number) -> PythonFraction? {
            if case .float(let v) = n { return PythonFraction(exactly: v) }
            return n.fraction
        }
        if let p = exact(x), let q = exact(y) {
            let left = p.numerator.multipliedFullWidth(by: q.denominator)
            let right = q.numerator.multipliedFullWidth(by: p.denominator)
            return order(left.high, right.high) != .orderedSame ? order(left.high, right.high) : order(left.low, right.low)
        }
        return order(x.double, y.double)
    }

    package static func unary(_ op: PythonUnaryOperator, _ v: PythonValue) throws -> PythonValue {
        if op == .not { return .bool(!v.isTruthy) }
        guard let n = Number(v) else { throw PythonError(.type, "bad operand type for unary \(op.rawValue): '\(v.typeName)'") }
        if op == .plus {
            if case .bool(let b) = v { return .int(b ? 1 : 0) }
            return v
        }
        switch n {
        case .int(let i): return .int(try checkedSubtract(0, i))
        case .fraction(let f): return .fraction(try f.negated())
        case .float(let x): return .float(-x)
        }
    }

    /// `container[index]` for lists, tuples and strings (negative indices count from the end).
    package static func subscripted(_ container: PythonValue, _ index: PythonValue) throws -> PythonValue {
        let items: [PythonValue]
        switch container {
        case .list(let x), .tuple(let x): items = x
        case .string(let s): items = s.unicodeScalars.map { .string(String($0)) }
        default: throw PythonError(.type, "'\(container.typeName)' object is not subscriptable")
        }
        guard let raw = integerOperand(index) else {
            throw PythonError(.type, "\(container.typeName) indices must be integers, not \(index.typeName)")
        }
        let i = raw < 0 ? raw + items.count : raw
        guard i >= 0 && i < items.count else { throw PythonError(.index, "\(container.typeName) index out of range") }
        return items[i]
    }
}

// MARK: - Syntax

/// A parsed expression. `parse` accepts Python's expression grammar restricted to what the
/// templates use: literals (ints, floats, strings, True/False/None, lists, tuples), names,
/// calls of named functions (positional arguments), indexing, unary `-`/`+`/`not`,
/// `+ - * / // % **`, chained comparisons, `and`/`or`, and `a if c else b`.
package indirect enum PythonExpression: Equatable, Sendable {
    case constant(PythonValue)
    case name(String)
    case list([PythonExpression])
    case tuple([PythonExpression])
    case unary(PythonUnaryOperator, PythonExpression)
    case binary(PythonBinaryOperator, PythonExpression, PythonExpression)
    case comparison(PythonExpression, [PythonComparisonLink])
    case and([PythonExpression])
    case or([PythonExpression])
    case conditional(test: PythonExpression, then: PythonExpression, otherwise: PythonExpression)
    case call(String, [PythonExpression])
    case `subscript`(PythonExpression, PythonExpression)

    package static func parse(_ source: String) throws -> PythonExpression {
        var parser = PythonParser(tokens: try PythonTokenizer.tokenize(source), source: source)
        return try parser.parseTop()
    }

    /// Every name the expression mentions, called functions included (as Python's `ast.walk`
    /// over `Name` nodes sees them).
    package var referencedNames: Set<String> {
        var names = Set<String>()
        collectNames(into: &names)
        return names
    }

    private func collectNames(into names: inout Set<String>) {
        switch self {
        case .constant: break
        case .name(let n): names.insert(n)
        case .list(let items), .tuple(let items), .and(let items), .or(let items): items.forEach { $0.collectNames(into: &names) }
        case .unary(_, let e): e.collectNames(into: &names)
        case .binary(_, let a, let b), .subscript(let a, let b): a.collectNames(into: &names); b.collectNames(into: &names)
        case .comparison(let first, let links):
            first.collectNames(into: &names)
            links.forEach { $0.operand.collectNames(into: &names) }
        case .conditional(let t, let a, let b): [t, a, b].forEach { $0.collectNames(into: &names) }
        case .call(let f, let args): names.insert(f); args.forEach { $0.collectNames(into: &names) }
        }
    }
}

/// One `op operand` step of a (possibly chained) comparison.
package struct PythonComparisonLink: Equatable, Sendable {
    package let op: PythonComparisonOperator
    package let operand: PythonExpression
}

private enum PythonToken: Equatable {
    case number(PythonValue)
    case string(String)
    case name(String)
    case symbol(String)
    case end
}

private enum PythonTokenizer {
    static let symbols = ["**", "//", "==", "!=", "<=", ">=", "<", ">", "=", "+", "-", "*", "/", "%", "(", ")", "[", "]", ","]

    static func tokenize(_ source: String) throws -> [PythonToken] {
        let s = Array(source.unicodeScalars)
        var tokens: [PythonToken] = []
        var i = 0
        func isDigit(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }
        func isNameStart(_ c: Unicode.Scalar) -> Bool { c == "_" || c.properties.isAlphabetic }
        while i < s.count {
            let c = s[i]
            if c == " " || c == "\t" || c == "\n" || c == "\r" { i += 1; continue }
            if isDigit(c) || (c == "." && i + 1 < s.count && isDigit(s[i + 1])) {
                var j = i
                var isFloat = false
                while j < s.count, isDigit(s[j]) || s[j] == "_" { j += 1 }
                if j < s.count, s[j] == "." { isFloat = true; j += 1; while j < s.count, isDigit(s[j]) || s[j] == "_" { j += 1 } }
                if j < s.count, s[j] == "e" || s[j] == "E" {
                    var k = j + 1
                    if k < s.count, s[k] == "+" || s[k] == "-" { k += 1 }
                    if k < s.count, isDigit(s[k]) {
                        isFloat = true
                        j = k
                        while j < s.count, isDigit(s[j]) { j += 1 }
                    }
                }
                let text = String(String.UnicodeScalarView(s[i..<j]))
                if j < s.count, isNameStart(s[j]) { throw PythonError(.syntax, "invalid number literal `\(text)\(s[j])` in `\(source)`") }
                if isFloat {
                    guard let x = PythonFormat.parseFloat(text) else { throw PythonError(.syntax, "invalid number `\(text)` in `\(source)`") }
                    tokens.append(.number(.float(x)))
                } else {
                    guard let n = PythonFormat.parseInt(text) else {
                        throw PythonError(.overflow, "integer literal `\(text)` beyond 64 bits in `\(source)`")
                    }
                    tokens.append(.number(.int(n)))
                }
                i = j
                continue
            }
            if isNameStart(c) {
                var j = i + 1
                while j < s.count, s[j] == "_" || s[j].properties.isAlphabetic || isDigit(s[j]) { j += 1 }
                tokens.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
                continue
            }
            if c == "'" || c == "\"" {
                if i + 2 < s.count, s[i + 1] == c, s[i + 2] == c { throw PythonError(.syntax, "triple-quoted strings are not supported in `\(source)`") }
                var j = i + 1
                var text = String.UnicodeScalarView()
                while j < s.count, s[j] != c {
                    if s[j] == "\\", j + 1 < s.count {
                        let e = s[j + 1]
                        j += 2
                        switch e {
                        case "n": text.append("\n")
                        case "t": text.append("\t")
                        case "r": text.append("\r")
                        case "0": text.append("\0")
                        case "\\", "'", "\"": text.append(e)
                        case "x", "u":
                            let count = e == "x" ? 2 : 4
                            guard j + count <= s.count, let code = UInt32(String(String.UnicodeScalarView(s[j..<(j + count)])), radix: 16),
                                  let scalar = Unicode.Scalar(code) else {
                                throw PythonError(.syntax, "bad \\\(e) escape in `\(source)`")
                            }
                            text.append(scalar)
                            j += count
                        default: text.append("\\"); text.append(e)  // Python keeps unknown escapes as written
                        }
                        continue
                    }
                    if s[j] == "\n" { break }
                    text.append(s[j])
                    j += 1
                }
                guard j < s.count, s[j] == c else { throw PythonError(.syntax, "unterminated string in `\(source)`") }
                tokens.append(.string(String(text)))
                i = j + 1
                continue
            }
            let rest = String(String.UnicodeScalarView(s[i..<min(i + 2, s.count)]))
            guard let symbol = symbols.first(where: { rest.hasPrefix($0) }) else {
                throw PythonError(.syntax, "unsupported character `\(c)` in `\(source)`")
            }
            tokens.append(.symbol(symbol))
            i += symbol.unicodeScalars.count
        }
        tokens.append(.end)
        return tokens
    }
}

private struct PythonParser {
    let tokens: [PythonToken]
    let source: String
    var position = 0

    init(tokens: [PythonToken], source: String) {
        self.tokens = tokens
        self.source = source
    }

    private var current: PythonToken { tokens[position] }

    private func isSymbol(_ s: String) -> Bool { current == .symbol(s) }
    private func isKeyword(_ k: String) -> Bool { current == .name(k) }

    private func error(_ message: String) -> PythonError { PythonError(.syntax, "\(message) in `\(source)`") }

    private mutating func expect(_ s: String) throws {
        guard isSymbol(s) else { throw error("expected `\(s)`") }
        position += 1
    }

    private static let unsupportedKeywords: Set<String> = ["in", "is", "lambda", "for", "while", "import", "def", "class", "yield", "await"]
    private static let binaryPrecedence: [String: (PythonBinaryOperator, Int)] = [
        "+": (.add, 1), "-": (.subtract, 1), "*": (.multiply, 2), "/": (.divide, 2), "//": (.floorDivide, 2), "%": (.modulo, 2),
    ]
    private static let comparisons: [String: PythonComparisonOperator] = [
        "<": .less, "<=": .lessOrEqual, ">": .greater, ">=": .greaterOrEqual, "==": .equal, "!=": .notEqual,
    ]

    mutating func parseTop() throws -> PythonExpression {
        let first = try parseConditional()
        var result = first
        if isSymbol(",") {  // `a, b` at the top is a tuple, as in Python
            var items = [first]
            while isSymbol(",") {
                position += 1
                if current == .end { break }
                items.append(try parseConditional())
            }
            result = .tuple(items)
        }
        guard current == .end else { throw error("unexpected \(describe(current))") }
        return result
    }

    private func describe(_ t: PythonToken) -> String {
        switch t {
        case .number(let v): "number \(v.printed)"
        case .string(let s): "string \(PythonFormat.repr(s))"
        case .name(let n): "`\(n)`"
        case .symbol(let s): "`\(s)`"
        case .end: "end"
        }
    }

    private mutating func parseConditional() throws -> PythonExpression {
        let body = try parseOr()
        guard isKeyword("if") else { return body }
        position += 1
        let test = try parseOr()
        guard isKeyword("else") else { throw error("expected `else`") }
        position += 1
        return .conditional(test: test, then: body, otherwise: try parseConditional())
    }

    private mutating func parseOr() throws -> PythonExpression {
        var items = [try parseAnd()]
        while isKeyword("or") { position += 1; items.append(try parseAnd()) }
        return items.count == 1 ? items[0] : .or(items)
    }

    private mutating func parseAnd() throws -> PythonExpression {
        var items = [try parseNot()]
        while isKeyword("and") { position += 1; items.append(try parseNot()) }
        return items.count == 1 ? items[0] : .and(items)
    }

    private mutating func parseNot() throws -> PythonExpression {
        if isKeyword("not") { position += 1; return .unary(.not, try parseNot()) }
        return try parseComparison()
    }

    private mutating func parseComparison() throws -> PythonExpression {
        let first = try parseArithmetic(minimumPrecedence: 1)
        var links: [PythonComparisonLink] = []
        while case .symbol(let s) = current, let op = Self.comparisons[s] {
            position += 1
            links.append(PythonComparisonLink(op: op, operand: try parseArithmetic(minimumPrecedence: 1)))
        }
        if case .name(let n) = current, Self.unsupportedKeywords.contains(n) { throw error("`\(n)` is not supported") }
        return links.isEmpty ? first : .comparison(first, links)
    }

    /// Precedence climbing over the left-associative arithmetic operators.
    private mutating func parseArithmetic(minimumPrecedence: Int) throws -> PythonExpression {
        var left = try parseFactor()
        while case .symbol(let s) = current, let (op, precedence) = Self.binaryPrecedence[s], precedence >= minimumPrecedence {
            position += 1
            let right = try parseArithmetic(minimumPrecedence: precedence + 1)
            left = .binary(op, left, right)
        }
        return left
    }

    /// Unary signs bind looser than `**` on their right (`-2**2 == -4`) and tighter than `*`.
    private mutating func parseFactor() throws -> PythonExpression {
        if isSymbol("-") { position += 1; return .unary(.negate, try parseFactor()) }
        if isSymbol("+") { position += 1; return .unary(.plus, try parseFactor()) }
        return try parsePower()
    }

    private mutating func parsePower() throws -> PythonExpression {
        let base = try parsePrimary()
        guard isSymbol("**") else { return base }
        position += 1
        return .binary(.power, base, try parseFactor())
    }

    private mutating func parsePrimary() throws -> PythonExpression {
        var expression = try parseAtom()
        while true {
            if isSymbol("(") {
                guard case .name(let function) = expression else { throw error("only named functions can be called") }
                position += 1
                var arguments: [PythonExpression] = []
                while !isSymbol(")") {
                    arguments.append(try parseConditional())
                    if isSymbol("=") { throw error("keyword arguments are not supported") }
                    if isSymbol(",") { position += 1 } else { break }
                }
                try expect(")")
                expression = .call(function, arguments)
            } else if isSymbol("[") {
                position += 1
                let index = try parseConditional()
                try expect("]")
                expression = .subscript(expression, index)
            } else {
                return expression
            }
        }
    }

    private mutating func parseSequence(closing: String) throws -> (items: [PythonExpression], sawComma: Bool) {
        var items: [PythonExpression] = []
        var sawComma = false
        while !isSymbol(closing) {
            items.append(try parseConditional())
            if isSymbol(",") { position += 1; sawComma = true } else { break }
        }
        try expect(closing)
        return (items, sawComma)
    }

    private mutating func parseAtom() throws -> PythonExpression {
        let token = current
        switch token {
        case .number(let v):
            position += 1
            return .constant(v)
        case .string(let s):
            position += 1
            var text = s
            while case .string(let more) = current { text += more; position += 1 }  // adjacent literals join
            return .constant(.string(text))
        case .name(let n):
            position += 1
            switch n {
            case "True": return .constant(.bool(true))
            case "False": return .constant(.bool(false))
            case "None": return .constant(.none)
            case "and", "or", "not", "if", "else": throw error("unexpected `\(n)`")
            default:
                if Self.unsupportedKeywords.contains(n) { throw error("`\(n)` is not supported") }
                return .name(n)
            }
        case .symbol("("):
            position += 1
            let (items, sawComma) = try parseSequence(closing: ")")
            return items.count == 1 && !sawComma ? items[0] : .tuple(items)
        case .symbol("["):
            position += 1
            return .list(try parseSequence(closing: "]").items)
        default:
            throw error("unexpected \(describe(token))")
        }
    }
}

// MARK: - Evaluation

/// A function the expressions may call: positional arguments in, a value out.
package typealias PythonFunction = ([PythonValue]) throws -> PythonValue

/// What names mean during one evaluation: variables first (as in Python, a variable shadows a
/// function of the same name), then functions.
package struct PythonEnvironment {
    package var variables: [String: PythonValue]
    package var functions: [String: PythonFunction]

    /// `functions` are added to (and override) the standard ones of `PythonBuiltins`.
    package init(variables: [String: PythonValue] = [:], functions: [String: PythonFunction] = [:]) {
        self.variables = variables
        var all: [String: PythonFunction] = [:]
        for (name, f) in PythonBuiltins.standard { all[name] = f }
        for (name, f) in functions { all[name] = f }
        self.functions = all
    }
}

extension PythonExpression {
    package func evaluate(in environment: PythonEnvironment) throws -> PythonValue {
        switch self {
        case .constant(let v): return v
        case .name(let n):
            if let v = environment.variables[n] { return v }
            if environment.functions[n] != nil { throw PythonError(.type, "the function `\(n)` is used as a value (not supported)") }
            throw PythonError(.name, "name '\(n)' is not defined")
        case .list(let items): return .list(try items.map { try $0.evaluate(in: environment) })
        case .tuple(let items): return .tuple(try items.map { try $0.evaluate(in: environment) })
        case .unary(let op, let e): return try PythonValue.unary(op, try e.evaluate(in: environment))
        case .binary(let op, let a, let b):
            let x = try a.evaluate(in: environment), y = try b.evaluate(in: environment)
            // Conditions are mostly integer arithmetic, and rejection sampling runs them by the thousand.
            if case .int(let i) = x, case .int(let j) = y {
                switch op {
                case .add: return .int(try checkedAdd(i, j))
                case .subtract: return .int(try checkedSubtract(i, j))
                case .multiply: return .int(try checkedMultiply(i, j))
                case .floorDivide where j > 0: return .int(floorDivide(i, j))
                case .modulo where j > 0: return .int(floorModulo(i, j))
                default: break
                }
            }
            return try PythonValue.binary(op, x, y)
        case .comparison(let first, let links):
            var left = try first.evaluate(in: environment)
            for link in links {
                let right = try link.operand.evaluate(in: environment)
                let holds: Bool
                if case .int(let i) = left, case .int(let j) = right {
                    switch link.op {
                    case .less: holds = i < j
                    case .lessOrEqual: holds = i <= j
                    case .greater: holds = i > j
                    case .greaterOrEqual: holds = i >= j
                    case .equal: holds = i == j
                    case .notEqual: holds = i != j
                    }
                } else {
                    holds = try PythonValue.compare(link.op, left, right)
                }
                if !holds { return .bool(false) }
                left = right
            }
            return .bool(true)
        // The package evaluates `and`/`or` with all()/any(): a bool, short-circuited.
        case .and(let items):
            for item in items where !(try item.evaluate(in: environment).isTruthy) { return .bool(false) }
            return .bool(true)
        case .or(let items):
            for item in items where try item.evaluate(in: environment).isTruthy { return .bool(true) }
            return .bool(false)
        case .conditional(let test, let then, let otherwise):
            return try (try test.evaluate(in: environment).isTruthy ? then : otherwise).evaluate(in: environment)
        case .call(let name, let argumentExpressions):
            if let v = environment.variables[name] { throw PythonError(.type, "'\(v.typeName)' object is not callable") }
            guard let function = environment.functions[name] else { throw PythonError(.name, "name '\(name)' is not defined") }
            return try function(try argumentExpressions.map { try $0.evaluate(in: environment) })
        case .subscript(let container, let index):
            return try PythonValue.subscripted(try container.evaluate(in: environment), try index.evaluate(in: environment))
        }
    }
}

// MARK: - Functions

/// The functions every evaluation knows: Python's `int`, `float`, `round`, `abs`, `min`,
/// `max`, `sum`, `len`, `str`, `list`, and the template helpers of multilingual-gsm-symbolic
/// that draw nothing at random (`divides`, `is_int`, `ensure_int`, `Fraction` (which, as in
/// the package, formats a number as a fraction string), `plural`, `to_title`, `range_list`).
package enum PythonBuiltins {
    package static let standard: [String: @Sendable ([PythonValue]) throws -> PythonValue] = [
        "int": { args in try toInt(one(args, "int")) },
        "float": { args in try toFloat(one(args, "float")) },
        "round": { args in
            try arity(args, "round", 1...2)
            if args.count == 2, case .none = args[1] { return try round(args[0], digits: nil) }
            return try round(args[0], digits: args.count == 2 ? integer(args[1], "round") : nil)
        },
        "abs": { args in
            let v = try one(args, "abs")
            guard case .bool = v else {
                if try PythonValue.compare(.less, v, .int(0)) { return try PythonValue.unary(.negate, v) }
                return v
            }
            return try PythonValue.unary(.plus, v)
        },
        "min": { args in try extreme(args, "min", .less) },
        "max": { args in try extreme(args, "max", .greater) },
        "sum": { args in
            try arity(args, "sum", 1...2)
            var total = args.count == 2 ? args[1] : .int(0)
            for item in try args[0].elements(for: "sum") { total = try PythonValue.binary(.add, total, item) }
            return total
        },
        "len": { args in
            let v = try one(args, "len")
            if case .string(let s) = v { return .int(s.unicodeScalars.count) }
            guard case .list(let items) = v else {
                if case .tuple(let items) = v { return .int(items.count) }
                throw PythonError(.type, "object of type '\(v.typeName)' has no len()")
            }
            return .int(items.count)
        },
        "str": { args in .string(try one(args, "str").printed) },
        "list": { args in .list(try one(args, "list").elements(for: "list")) },
        "divides": { args in
            try arity(args, "divides", 2...2)
            if PythonValue.equal(args[1], .int(0)) { return .bool(false) }
            return .bool(PythonValue.equal(try PythonValue.binary(.modulo, args[0], args[1]), .int(0)))
        },
        "is_int": { args in .bool(try isInt(one(args, "is_int"))) },
        "ensure_int": { args in
            let v = try one(args, "ensure_int")
            guard try isInt(v) else { throw PythonError(.value, "Value \(v.printed) cannot be converted to int.") }
            return try round(v, digits: nil)
        },
        "Fraction": { args in
            let v = try one(args, "Fraction")
            guard case .float(let x) = v else { return .string(v.printed) }
            guard let exact = PythonFraction(exactly: x) else {
                throw PythonError(.overflow, "Fraction(\(PythonFormat.repr(x))) needs more than 64 bits")
            }
            return .string(try exact.limitingDenominator().description)
        },
        "plural": { args in
            guard let n = args.first else { throw PythonError(.type, "plural() missing its number") }
            let forms = args.dropFirst()
            switch forms.count {
            case 2:
                return PythonValue.equal(try call("abs", [n]), .int(1)) ? forms[forms.startIndex] : forms[forms.startIndex + 1]
            case 3:
                guard case .int(let raw) = try toInt(n) else { throw PythonError.overflow }
                let m = raw.magnitude
                let f = Array(forms)
                if m % 10 == 1 && m % 100 != 11 { return f[0] }
                if (2...4).contains(m % 10) && !(12...14).contains(m % 100) { return f[1] }
                return f[2]
            default:
                throw PythonError(.value, "plural() expects 2 (singular/plural) or 3 (one/few/many) forms, got \(forms.count)")
            }
        },
        "to_title": { args in
            guard case .string(let s) = try one(args, "to_title") else { throw PythonError(.type, "to_title() expects a string") }
            guard let first = s.first else { throw PythonError(.index, "string index out of range") }
            return .string(first.uppercased() + s.dropFirst())
        },
        "range_list": { args in .list(try rangeValues(args, "range_list")) },
    ]

    /// Calls a standard function by name (for helpers built on others).
    package static func call(_ name: String, _ args: [PythonValue]) throws -> PythonValue {
        guard let f = standard[name] else { throw PythonError(.name, "name '\(name)' is not defined") }
        return try f(args)
    }

    /// `list(range(start, end[, step]))`, except that start > end gives [] whatever the step
    /// (the package's `range_possibilities`).
    package static func rangeValues(_ args: [PythonValue], _ function: String) throws -> [PythonValue] {
        try arity(args, function, 2...3)
        let start = try integer(args[0], function), end = try integer(args[1], function)
        let step = args.count == 3 ? try integer(args[2], function) : 1
        guard step != 0 else { throw PythonError(.value, "range() arg 3 must not be zero") }
        if start > end { return [] }
        return step > 0 ? stride(from: start, to: end, by: step).map { .int($0) } : []
    }

    package static func arity(_ args: [PythonValue], _ function: String, _ allowed: ClosedRange<Int>) throws {
        guard allowed.contains(args.count) else {
            throw PythonError(.type, "\(function)() takes \(allowed.lowerBound == allowed.upperBound ? "\(allowed.lowerBound)" : "\(allowed.lowerBound) to \(allowed.upperBound)") arguments (\(args.count) given)")
        }
    }

    private static func one(_ args: [PythonValue], _ function: String) throws -> PythonValue {
        try arity(args, function, 1...1)
        return args[0]
    }

    /// An argument that must be an integer (bools count, as in Python).
    package static func integer(_ v: PythonValue, _ function: String) throws -> Int {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: throw PythonError(.type, "\(function)(): '\(v.typeName)' object cannot be interpreted as an integer")
        }
    }

    package static func toInt(_ v: PythonValue) throws -> PythonValue {
        switch v {
        case .int: return v
        case .bool(let b): return .int(b ? 1 : 0)
        case .float(let x):
            if x.isNaN { throw PythonError(.value, "cannot convert float NaN to integer") }
            guard let i = Int(exactly: x.rounded(.towardZero)) else { throw PythonError(.overflow, "cannot convert float \(PythonFormat.repr(x)) to integer") }
            return .int(i)
        case .fraction(let f): return .int(f.numerator / f.denominator)  // truncation, as Python's int(Fraction)
        case .string(let s):
            guard let i = PythonFormat.parseInt(s) else { throw PythonError(.value, "invalid literal for int() with base 10: \(PythonFormat.repr(s))") }
            return .int(i)
        default: throw PythonError(.type, "int() argument must be a string or a number, not '\(v.typeName)'")
        }
    }

    package static func toFloat(_ v: PythonValue) throws -> PythonValue {
        switch v {
        case .float: return v
        case .int(let i): return .float(Double(i))
        case .bool(let b): return .float(b ? 1 : 0)
        case .fraction(let f): return .float(f.doubleValue)
        case .string(let s):
            guard let x = PythonFormat.parseFloat(s) else { throw PythonError(.value, "could not convert string to float: \(PythonFormat.repr(s))") }
            return .float(x)
        default: throw PythonError(.type, "float() argument must be a string or a real number, not '\(v.typeName)'")
        }
    }

    /// `round(v)` gives an int (ties to even); `round(v, n)` keeps the type of `v`.
    package static func round(_ v: PythonValue, digits: Int?) throws -> PythonValue {
        switch v {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i):
            guard let n = digits, n < 0 else { return .int(i) }
            guard n > -19 else { return .int(0) }
            let scale = try checkedPower(10, -n)
            return .int(try checkedMultiply(try PythonFraction(i, scale).roundedToEven(), scale))
        case .float(let x):
            if let n = digits { return .float(PythonFormat.round(x, digits: n)) }
            if x.isNaN { throw PythonError(.value, "cannot convert float NaN to integer") }
            guard let i = Int(exactly: x.rounded(.toNearestOrEven)) else { throw PythonError(.overflow, "cannot convert float infinity to integer") }
            return .int(i)
        case .fraction(let f):
            guard let n = digits else { return .int(f.roundedToEven()) }
            let scale = try PythonFraction(try checkedPower(10, n.magnitude > 18 ? 18 : Int(n.magnitude)))
            if n >= 0 { return .fraction(try PythonFraction(try f.multiplying(scale).roundedToEven(), scale.numerator)) }
            return .fraction(try PythonFraction(try checkedMultiply(try f.multiplying(try scale.reciprocal()).roundedToEven(), scale.numerator)))
        default: throw PythonError(.type, "type \(v.typeName) doesn't define __round__ method")
        }
    }

    /// The package's `is_int`: an int, a Fraction with denominator 1, or a float within 1e-6 of an integer.
    package static func isInt(_ v: PythonValue) throws -> Bool {
        switch v {
        case .int, .bool: return true
        case .fraction(let f): return f.isInteger
        case .float(let x):
            if x == x.rounded(.towardZero) && x.isFinite { return true }
            guard case .int(let nearest) = try round(v, digits: nil) else { return false }
            return (x - Double(nearest)).magnitude < 1e-6
        default: return false
        }
    }

    private static func extreme(_ args: [PythonValue], _ function: String, _ op: PythonComparisonOperator) throws -> PythonValue {
        guard !args.isEmpty else { throw PythonError(.type, "\(function) expected at least 1 argument, got 0") }
        let items = args.count == 1 ? try args[0].elements(for: function) : args
        guard var best = items.first else { throw PythonError(.value, "\(function)() arg is an empty sequence") }
        for item in items.dropFirst() where try PythonValue.compare(op, item, best) { best = item }
        return best
    }
}

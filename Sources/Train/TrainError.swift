import Tensors

/// A training run that cannot go on: a one-line message saying what is wrong and, where there is
/// one, the fix. Problems with an input file use `FormatError` (which names the file) instead.
public struct TrainError: UserFacingError, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side

class Order(_message.Message):
    __slots__ = ("order_id", "symbol", "side", "quantity", "price", "client_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    client_id: str
    def __init__(self, order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[float] = ..., price: _Optional[float] = ..., client_id: _Optional[str] = ...) -> None: ...

class Fill(_message.Message):
    __slots__ = ("fill_id", "order_id", "symbol", "side", "quantity", "price")
    FILL_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    fill_id: str
    order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    def __init__(self, fill_id: _Optional[str] = ..., order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[float] = ..., price: _Optional[float] = ...) -> None: ...

class SubmitOrderRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class SubmitOrderResponse(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStrategyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStrategyStatusResponse(_message.Message):
    __slots__ = ("orders_accepted", "orders_filled", "orders_pending", "orders_lost", "duplicates_ignored")
    ORDERS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FILLED_FIELD_NUMBER: _ClassVar[int]
    ORDERS_PENDING_FIELD_NUMBER: _ClassVar[int]
    ORDERS_LOST_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_IGNORED_FIELD_NUMBER: _ClassVar[int]
    orders_accepted: int
    orders_filled: int
    orders_pending: int
    orders_lost: int
    duplicates_ignored: int
    def __init__(self, orders_accepted: _Optional[int] = ..., orders_filled: _Optional[int] = ..., orders_pending: _Optional[int] = ..., orders_lost: _Optional[int] = ..., duplicates_ignored: _Optional[int] = ...) -> None: ...

class CheckOrderRequest(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class CheckOrderResponse(_message.Message):
    __slots__ = ("approved", "reason")
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    approved: bool
    reason: str
    def __init__(self, approved: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRiskReportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRiskReportResponse(_message.Message):
    __slots__ = ("positions", "gross_exposure", "limit", "fills_seen")
    class PositionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    GROSS_EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILLS_SEEN_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.ScalarMap[str, float]
    gross_exposure: float
    limit: float
    fills_seen: int
    def __init__(self, positions: _Optional[_Mapping[str, float]] = ..., gross_exposure: _Optional[float] = ..., limit: _Optional[float] = ..., fills_seen: _Optional[int] = ...) -> None: ...

class ExecuteOrderRequest(_message.Message):
    __slots__ = ("order", "correlation_id")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    order: Order
    correlation_id: str
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class ExecuteOrderResponse(_message.Message):
    __slots__ = ("fill",)
    FILL_FIELD_NUMBER: _ClassVar[int]
    fill: Fill
    def __init__(self, fill: _Optional[_Union[Fill, _Mapping]] = ...) -> None: ...

"""ASGI entry point: `uvicorn inferencekey_web.asgi:application`.

A tiny router in front of two apps: HTTP requests under `/endpoint/` go to the data-plane gateway
(raw ASGI, `gateway/app.py`), everything else to Django. Lifespan events (which Django's ASGI
handler does not accept) start and close the gateway's shared upstream connection pool.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferencekey_web.settings")
django_application = get_asgi_application()  # sets Django up before the gateway imports models

from gateway.app import PREFIX, GatewayApp  # noqa: E402
from inferencekey_web.lib.body_limits import BodyLimit  # noqa: E402
from inferencekey_web.lib.security import SecureASGI  # noqa: E402
from workloads import asgi_list  # noqa: E402

gateway_application = GatewayApp()
# The raw ASGI routes skip Django's middleware: give them the same HTTPS redirect and headers.
_secured_gateway = SecureASGI(gateway_application)
_secured_list = SecureASGI(asgi_list.list_workloads)
# Bodies over the route's cap are refused before Django spools them to disk (see body_limits).
_limited_django = BodyLimit(django_application)


async def application(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root):]
        if path.startswith(PREFIX):
            await _secured_gateway(scope, receive, send)
        elif (project := asgi_list.match(scope["method"], path)) is not None:
            # The SDK's hottest control-plane call, answered without Django's request machinery.
            await _secured_list(scope, receive, send, project)
        else:
            await _limited_django(scope, receive, send)
    elif kind == "lifespan":
        await gateway_application.lifespan(receive, send)
    else:
        await django_application(scope, receive, send)

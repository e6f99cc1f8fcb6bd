"""Monitoring as code: Grafana dashboards (dashboards.py) and charts for the README
(render_charts.py). Prometheus, Alertmanager and Grafana provisioning files live beside them."""
